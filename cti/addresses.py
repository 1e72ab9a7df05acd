"""``host:port`` addresses as the settings write them. Pure: no I/O."""

from __future__ import annotations

import ipaddress


def split_address(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port_text)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP literal (a name is never assumed local)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """``0.0.0.0`` / ``::`` (listen on every interface): no address another host can dial."""
    try:
        return not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
