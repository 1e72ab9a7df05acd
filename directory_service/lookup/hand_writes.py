"""Writes by hand as precise changes, on the directory replica's side.

A keyspace notification outside an API write's bracket is a write by hand: without more,
the replica drops the whole domain and reloads it (for a 100,000-extension domain, ~36 MB
read per replica per write). The event service's directory watch
(``event_service.ingest.directory_watch``) re-reads such keys once for the whole deployment and
says on ``cti:directory:hand-writes`` which extensions changed:

- ``{"type": "alive"}`` every second while it leads;
- ``{"type": "read", "domain": D, "id": n}`` just before its (chunked) re-read of
  ``cti_exten@D``, on the connection that reads: every notification of D before it in this
  connection's stream is covered by that read;
- ``{"type": "reading", "domain": D, "id": n}`` every second while that read goes on;
- ``{"type": "done", "domain": D, "id": n, "extensions": [...]}`` (or ``"whole": true``).

:class:`HandWrites` holds the drop while the watch is alive: a domain written by hand
waits for the ``done`` covering it and re-reads just the extensions named; when no
``read`` comes within :attr:`HandWrites.WAIT_SECONDS` of the write, or no ``reading`` or
``done`` within as long of the last word on its read (watch gone, message lost), it is
dropped as before.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

Schedule = Callable[[float, Callable[[], None]], object]


class _Actions(Protocol):
    def invalidate_domain(self, domain: str) -> None: ...
    def refresh_extension(self, domain: str, user_id: str) -> None: ...


def _call_later(delay: float, callback: Callable[[], None]) -> object:
    return asyncio.get_running_loop().call_later(delay, callback)


class HandWrites:
    WAIT_SECONDS = 2.0
    """How long a domain written by hand keeps its cached view waiting for the watch."""
    ALIVE_WITHIN = 3.0
    """The watch counts as alive this long after its last ``alive``."""

    def __init__(
        self,
        actions: _Actions,
        *,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule = _call_later,
    ) -> None:
        self.actions = actions
        self.clock = clock
        self.schedule = schedule
        self._alive_at: float | None = None
        self._tokens = itertools.count(1)
        self._pending: dict[str, int] = {}
        """domain -> token of its notifications not yet covered by a ``read``."""
        self._awaiting: dict[tuple[str, int], int] = {}
        """(domain, read id) -> token, until its ``done``."""
        self._deadline: dict[int, float] = {}
        """token -> when it is dropped unless its read is heard of again."""

    def hold(self, domain: str) -> bool:
        """A write by hand in ``domain``: ``True`` if the watch will name what changed
        (the caller keeps the view), ``False`` if the caller must drop it now."""
        alive = self._alive_at is not None and self.clock() - self._alive_at < self.ALIVE_WITHIN
        if not alive:
            return False
        if domain not in self._pending:
            token = next(self._tokens)
            self._pending[domain] = token
            self._wait(domain, token)
        return True

    def _wait(self, domain: str, token: int) -> None:
        self._deadline[token] = self.clock() + self.WAIT_SECONDS
        self.schedule(self.WAIT_SECONDS, lambda: self._expire(domain, token))

    def handle(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
            kind = message["type"]
            domain = str(message.get("domain", ""))
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable hand-write message ignored")
            return
        if kind == "alive":
            self._alive_at = self.clock()
        elif kind == "read":
            token = self._pending.pop(domain, None)
            if token is not None:
                self._awaiting[domain, _int(message.get("id"))] = token
                self._wait(domain, token)  # a read of a big domain takes its time
        elif kind == "reading":
            token = self._awaiting.get((domain, _int(message.get("id"))))
            if token is not None:
                self._wait(domain, token)
        elif kind == "done":
            self._alive_at = self.clock()
            token = self._awaiting.pop((domain, _int(message.get("id"))), None)
            if token is not None:
                self._deadline.pop(token, None)
            if message.get("whole"):
                self.actions.invalidate_domain(domain)
                return
            for extension in message.get("extensions") or ():
                self.actions.refresh_extension(domain, str(extension))

    def _expire(self, domain: str, token: int) -> None:
        """No ``done`` in time: drop the domain (its next lookup reloads it), as without
        the watch."""
        late = self._pending.get(domain) == token or token in self._awaiting.values()
        if not late:
            self._deadline.pop(token, None)
            return
        if self.clock() < self._deadline.get(token, 0.0) - 0.1:
            return  # its read was heard of since: the timer set then decides
        log.warning(
            "no precise change for a write by hand in time; dropping the domain",
            extra={"domain": domain},
        )
        self._deadline.pop(token, None)
        if self._pending.get(domain) == token:
            del self._pending[domain]
        for key in [k for k, t in self._awaiting.items() if t == token]:
            del self._awaiting[key]
        self.actions.invalidate_domain(domain)


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1
