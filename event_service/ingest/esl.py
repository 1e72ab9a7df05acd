"""A thin typed wrapper around python-ESL's inbound connection (the C library does the
protocol; it releases the GIL while it waits, so one thread per node reads in parallel)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import _ESL  # type: ignore[import-not-found]
import ESL

from cti.config import EslNode


class EslUnavailable(Exception):
    """Cannot connect or authenticate (FreeSWITCH down, wrong address or password)."""


class EslPasswordRefused(EslUnavailable):
    """FreeSWITCH answered ``-ERR invalid`` to our ``auth``: the ESL password differs."""


class EslAddressRefused(EslUnavailable):
    """FreeSWITCH's apply-inbound-acl refused our address before asking for a password."""


HANDSHAKE_TIMEOUT = 5.0


def refusal(
    address: str, greeting: Mapping[str, str], reply: Mapping[str, str] | None
) -> EslUnavailable:
    """Pure: what a failed handshake means, from FreeSWITCH's first frame and its answer
    to ``auth`` (``None`` when it was not asked)."""
    if greeting.get("Content-Type") == "text/rude-rejection":
        return EslAddressRefused(
            f"FreeSWITCH at {address} refused this client's address (apply-inbound-acl)"
        )
    if reply is not None and reply.get("Reply-Text", "").startswith("-ERR"):
        return EslPasswordRefused(f"FreeSWITCH at {address} refused the ESL password")
    return EslUnavailable(f"cannot reach FreeSWITCH at {address}")


def diagnose(node: EslNode, timeout: float = HANDSHAKE_TIMEOUT) -> EslUnavailable:
    """Why python-ESL could not open ``node``: libesl keeps the reason to itself, so the
    handshake is replayed over a plain socket (only after a failure, once per attempt)."""
    reply: dict[str, str] | None = None
    greeting: dict[str, str] = {}
    try:
        with socket.create_connection((node.host, node.port), timeout=timeout) as sock:
            reader = sock.makefile("rb")
            greeting = _read_headers(reader)
            if greeting.get("Content-Type") == "auth/request" and node.password.isprintable():
                sock.sendall(f"auth {node.password}\n\n".encode())
                reply = _read_headers(reader)
                sock.sendall(b"exit\n\n")
    except (OSError, UnicodeDecodeError):
        pass  # unreachable, or cut mid-way: what was read so far decides
    return refusal(node.address, greeting, reply)


def _read_headers(reader: Any) -> dict[str, str]:
    """One frame's headers (its body, if any, is left unread)."""
    headers: dict[str, str] = {}
    for _ in range(64):
        line = reader.readline(4096).decode()
        if line in ("", "\n"):
            break
        name, _, value = line.rstrip("\n").partition(":")
        headers[name.strip()] = value.strip()
    return headers


class EslDisconnected(Exception):
    """The socket closed (FreeSWITCH restarted, network cut, listener kicked)."""


class EslCorruptFrame(EslDisconnected):
    """python-ESL handed us something that is not an event: its framing slipped (libesl's
    buffer can misplace a header/body boundary under load, seen with bench_events.py).
    Events may have been lost, so the only safe move is: reconnect and reconcile."""


class EventHeaders(Mapping[str, str]):
    """A received event's decoded headers, read on demand: one C call per header asked
    for (a channel event has ~200 headers and the state needs ~20). Iterating (a
    registration's whole value) materialises them all once, via the library's JSON."""

    __slots__ = ("_all", "_event", "_seen")

    def __init__(self, event: Any, event_name: str | None = None) -> None:
        self._event = event
        self._all: dict[str, str] | None = None
        self._seen: dict[str, str | None] = {"Event-Name": event_name}

    def _header(self, name: str) -> str | None:
        if self._all is not None:
            return self._all.get(name)
        try:
            return self._seen[name]
        except KeyError:
            # The SWIG function itself, not its Python wrapper: this is the hot path.
            value: str | None = (
                # The body (a BACKGROUND_JOB's result), named as FreeSWITCH's JSON names it.
                self._event.getBody()
                if name == "_body"
                else _ESL.ESLevent_getHeader(self._event, name)
            )
            self._seen[name] = value
            return value

    def __getitem__(self, name: str) -> str:
        value = self._header(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        value = self._header(name)
        return default if value is None else value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._header(name) is not None

    def _materialised(self) -> dict[str, str]:
        if self._all is None:
            self._all = json.loads(self._event.serialize("json"))
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._materialised())

    def __len__(self) -> int:
        return len(self._materialised())


class EslConnection:
    def __init__(self, node: EslNode) -> None:
        self.node = node
        self._conn: Any = None

    def open(self) -> None:
        conn = ESL.ESLconnection(self.node.host, str(self.node.port), self.node.password)
        if not conn.connected():
            raise diagnose(self.node)
        self._conn = conn

    def subscribe(self, events: str) -> None:
        reply = self._conn.sendRecv(f"event plain {events}")
        text = reply.getHeader("Reply-Text") if reply is not None else None
        if not text or not text.startswith("+OK"):
            raise EslDisconnected(f"event subscription refused: {text!r}")

    def api(self, command: str, argument: str = "") -> str:
        """A blocking ``api`` command; events arriving meanwhile stay queued in the library."""
        reply = self._conn.api(command, argument)
        if reply is None or not self._conn.connected():
            raise EslDisconnected(f"no reply to api {command}")
        return str(reply.getBody() or "")

    def bgapi(self, command: str, argument: str, job_uuid: str) -> str:
        """Send ``bgapi <command> <argument>`` with our ``Job-UUID``; FreeSWITCH's reply
        (``+OK Job-UUID: ...``). The result comes later as a BACKGROUND_JOB event."""
        if "\n" in command + argument + job_uuid or "\r" in command + argument + job_uuid:
            raise ValueError("a line break in a bgapi command")  # never: built validated
        reply = self._conn.bgapi(command, argument, job_uuid)
        if reply is None or not self._conn.connected():
            raise EslDisconnected(f"no reply to bgapi {command}")
        return str(reply.getHeader("Reply-Text") or "")

    def receive(self, timeout_ms: int) -> Mapping[str, str] | None:
        """The next event's decoded headers, ``None`` when none came within the timeout."""
        event = self._conn.recvEventTimed(timeout_ms)
        if event is None:
            if not self._conn.connected():
                raise EslDisconnected(self.node.address)
            return None
        name = _ESL.ESLevent_getHeader(event, "Event-Name")
        if not name or name == "SOCKET_DATA":
            if event.getHeader("Content-Type") == "text/disconnect-notice":
                raise EslDisconnected(f"{self.node.address} sent a disconnect notice")
            raise EslCorruptFrame(
                f"unframed data from {self.node.address}: {event.serialize()[:80]!r}"
            )
        return EventHeaders(event, name)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None
