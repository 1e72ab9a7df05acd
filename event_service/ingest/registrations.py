"""Registration state transitions (pure): the devices FreeSWITCH holds for one extension.

What "one registration" is depends on the sofia profile's ``multiple-registrations``
(``sofia_reg_handle_register_token``): off (``false``, the default) = one per user@host, so
a new REGISTER replaces the old whatever its call-id and an unregister removes all of
them; ``contact`` = one per contact; ``true`` = one per call-id. A device id encodes exactly
that identity (plus node and profile), so a register upserts it, an unregister or expire
removes it, and the ``registrations`` hash shows the most recent device still present.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from event_service.ingest.events import Owner, RegistrationEvent

MODES = ("false", "contact", "true")


@dataclass(frozen=True)
class Device:
    node: str
    at: int
    """Event-Date-Timestamp of its last register (microseconds): "latest" means largest."""
    value: Mapping[str, str]
    """The register event's headers: what the ``registrations`` hash shows for it."""


Devices = Mapping[str, Device]


def device_id(mode: str, node: str, profile: str, owner: Owner, contact: str, call_id: str) -> str:
    base = f"{node}|{profile}|{owner.user}@{owner.domain}".lower()
    if mode == "contact":
        return f"{base}|c:{contact}"
    if mode == "true":
        return f"{base}|i:{call_id}"
    return base


def devices_of(devices: Devices, user: str, domain: str) -> Devices:
    """The devices of ``user@domain`` alone: a plain-extension key holds every domain's
    devices of that extension, and a device id names its owner as its third ``|`` part
    (a substring test would take 1000@a.example.org's for 1000@a.example's)."""
    owner = f"{user}@{domain}".lower()
    return {i: d for i, d in devices.items() if i.split("|", 3)[2:3] == [owner]}


def apply_event(devices: Devices, event: RegistrationEvent, node: str, mode: str) -> Devices:
    """The devices after one sofia event."""
    ident = device_id(mode, node, event.profile, event.owner, event.contact, event.call_id)
    updated = dict(devices)
    if event.action == "register":
        updated[ident] = Device(node=node, at=event.timestamp, value=dict(event.headers))
    else:
        updated.pop(ident, None)
    return updated


def latest(devices: Devices) -> Device | None:
    """The device the hash shows: the most recently registered one."""
    return max(devices.values(), key=lambda d: d.at, default=None)


def hash_value(devices: Devices) -> str | None:
    """The ``registrations`` hash value (flat JSON of the latest register), ``None`` = HDEL."""
    device = latest(devices)
    return None if device is None else json.dumps(device.value, ensure_ascii=False)


def encode(devices: Devices) -> str:
    return json.dumps(
        {ident: {"node": d.node, "at": d.at, "value": d.value} for ident, d in devices.items()},
        ensure_ascii=False,
    )


def decode(raw: bytes | str | None) -> dict[str, Device]:
    """Tolerant: a damaged record reads as no devices (the next reconcile rebuilds it)."""
    if not raw:
        return {}
    try:
        data: Any = json.loads(raw)
        return {
            ident: Device(node=str(d["node"]), at=int(d["at"]), value=dict(d["value"]))
            for ident, d in data.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def removal_payload(event: RegistrationEvent | None, device: Device | None, key: str) -> str:
    """What the channel/list carry when an extension's last registration goes: the
    unregister/expire event itself, or for a removal found by reconcile (no event) the
    gone device's record (else just the key) marked as a ``sofia::expire``."""
    if event is not None:
        return json.dumps(dict(event.headers), ensure_ascii=False)
    value = dict(device.value) if device is not None else {"cti-key": key}
    value["Event-Name"] = "CUSTOM"
    value["Event-Subclass"] = "sofia::expire"
    value["cti-reason"] = "reconcile"
    return json.dumps(value, ensure_ascii=False)
