"""The pure rules of invalidation: which cache action a notification means
(:class:`NotificationRouter`, one per subscriber connection, which knows the write brackets)
and whether a node's notifications still arrive (:class:`Canary`). No I/O: the connections
are :mod:`directory_service.lookup.invalidation`'s."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from cti import redis_keys
from cti.changes import DirectoryChange

if TYPE_CHECKING:  # the router stays pure: it only calls what it is given
    from directory_service.lookup.hand_writes import HandWrites

log = logging.getLogger(__name__)

CANARY_INTERVAL = 0.5
CANARY_DEADLINE = 2.0
REQUIRED_NOTIFY_FLAGS = "Kghxe"
"""K: keyspace channel; h: hash commands; g: DEL/RENAME/EXPIRE...; x: expiries; e: evictions."""
_ALL_ALIAS = "g$lshzxet"  # what "A" stands for (a subset is enough here)


class CacheActions(Protocol):
    def invalidate_domain(self, domain: str) -> None: ...
    def invalidate_shared(self) -> None: ...
    def refresh_extension(self, domain: str, user_id: str) -> None: ...


def merged_notify_flags(current: str) -> str | None:
    """``notify-keyspace-events`` with our flags added, or ``None`` if nothing is missing."""
    have = set(current)
    if "A" in have:
        have |= set(_ALL_ALIAS)
    missing = [flag for flag in REQUIRED_NOTIFY_FLAGS if flag not in have]
    return current + "".join(missing) if missing else None


class NotificationRouter:
    """Pure: fed the subscriber's messages in order, calls the cache actions they imply."""

    def __init__(
        self, actions: CacheActions, db: int = 0, hand_writes: HandWrites | None = None
    ) -> None:
        self.actions = actions
        self.hand_writes = hand_writes
        """Writes by hand named precisely by the event service (``hand_writes``)."""
        self.keyspace_prefix = f"__keyspace@{db}__:"
        self._bracket: list[str] | None = None  # keys touched since a write-begin

    @property
    def patterns(self) -> tuple[str, ...]:
        return (self.keyspace_prefix + "cti_*",)

    @property
    def channels(self) -> tuple[str, ...]:
        channels: tuple[str, ...] = (
            redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL,
            redis_keys.DIRECTORY_CHANGES_CHANNEL,
        )
        if self.hand_writes is not None:
            channels += (redis_keys.DIRECTORY_HAND_WRITES_CHANNEL,)
        return channels

    def handle(self, channel: str, data: bytes | str) -> None:
        if channel.startswith(self.keyspace_prefix):
            key = channel[len(self.keyspace_prefix) :]
            if self._bracket is not None:
                self._bracket.append(key)
            else:
                self._unexplained(key)
        elif channel == redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL:
            self._close_unexplained()
            self._bracket = []
        elif channel == redis_keys.DIRECTORY_CHANGES_CHANNEL:
            self._change(data)
        elif channel == redis_keys.DIRECTORY_HAND_WRITES_CHANNEL and self.hand_writes:
            self.hand_writes.handle(data)

    def _change(self, data: bytes | str) -> None:
        touched, self._bracket = self._bracket, None
        if touched is None:
            return  # no begin seen: its notifications were already handled one by one
        try:
            change = DirectoryChange.from_json(data)
        except ValueError:
            log.warning("unreadable directory change event; treating its keys as unknown")
            change = None
        precise_key = (
            redis_keys.extensions(change.domain)
            if change is not None and change.kind == "extension" and change.extension
            else None
        )
        for key in dict.fromkeys(touched):
            if key == precise_key and change is not None:
                self.actions.refresh_extension(change.domain, change.extension)
            else:
                self._unexplained(key)

    @property
    def bracket_open(self) -> bool:
        """A write-begin was seen and its change event not yet."""
        return self._bracket is not None

    def abandon_bracket(self) -> None:
        """The open bracket's change event is not coming (see the listener): its keys
        are unknown writes."""
        self._close_unexplained()

    def _close_unexplained(self) -> None:
        """A begin without its change event: its keys are unknown."""
        touched, self._bracket = self._bracket, None
        for key in touched or ():
            self._unexplained(key)

    def _unexplained(self, key: str) -> None:
        domain = redis_keys.domain_of_extensions_key(key)
        if domain is not None:
            if self.hand_writes is None or not self.hand_writes.hold(domain):
                self.actions.invalidate_domain(domain)
        elif key in (redis_keys.TEMPLATES, redis_keys.DOMAINS):
            self.actions.invalidate_shared()


class Canary:
    """Pure: when to write the canary, and whether its notifications still arrive.

    ``wrote(now)`` after each write, ``heard()`` on each notification of it; ``overdue``
    once a write has gone unheard for ``deadline`` seconds (any notification heard after
    a write shows delivery works until then)."""

    def __init__(self, interval: float = CANARY_INTERVAL, deadline: float = CANARY_DEADLINE):
        self.interval = interval
        self.deadline = deadline
        self.unheard_since: float | None = None  # the first write not followed by a notice
        self.last_write: float | None = None
        self.heard_since_start = False

    def due(self, now: float) -> bool:
        return self.last_write is None or now - self.last_write >= self.interval

    def wrote(self, now: float) -> None:
        self.last_write = now
        if self.unheard_since is None:
            self.unheard_since = now

    def heard(self) -> None:
        self.unheard_since = None
        self.heard_since_start = True

    def overdue(self, now: float) -> bool:
        return self.unheard_since is not None and now - self.unheard_since > self.deadline

    def restart_wait(self, now: float) -> None:
        """Give the canary another full deadline (after trying to restore the flags)."""
        self.unheard_since = now

    def wait(self, now: float, idle: float) -> float:
        """How long the listener may block on its connection before it must act."""
        until_write = (
            self.interval if self.last_write is None else (self.last_write + self.interval - now)
        )
        return max(0.0, min(idle, until_write))
