"""A thin typed wrapper around python-ESL's inbound connection (the C library does the
protocol; it releases the GIL while it waits, so one thread per node reads in parallel)."""

from __future__ import annotations

import json
from typing import Any

import ESL

from cti.config import EslNode


class EslUnavailable(Exception):
    """Cannot connect or authenticate (FreeSWITCH down, wrong address or password)."""


class EslDisconnected(Exception):
    """The socket closed (FreeSWITCH restarted, network cut, listener kicked)."""


class EslConnection:
    def __init__(self, node: EslNode) -> None:
        self.node = node
        self._conn: Any = None

    def open(self) -> None:
        conn = ESL.ESLconnection(self.node.host, str(self.node.port), self.node.password)
        if not conn.connected():
            raise EslUnavailable(f"cannot connect/authenticate to {self.node.address}")
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

    def receive(self, timeout_ms: int) -> dict[str, str] | None:
        """The next event's decoded headers, ``None`` when none came within the timeout."""
        event = self._conn.recvEventTimed(timeout_ms)
        if event is None:
            if not self._conn.connected():
                raise EslDisconnected(self.node.address)
            return None
        content_type = event.getHeader("Content-Type")
        if content_type == "text/disconnect-notice":
            raise EslDisconnected(f"{self.node.address} sent a disconnect notice")
        headers: dict[str, str] = json.loads(event.serialize("json"))
        return headers

    def close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None
