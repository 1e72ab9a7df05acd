"""Redis tells every replica what changed; this turns its messages into cache actions.

One subscriber connection per process receives, in Redis's own order:

- keyspace notifications ``__keyspace@<db>__:<key>`` for every ``cti_*`` key, whoever wrote;
- ``cti:directory:write-begin`` and ``cti:directory:changes``, which the gRPC API publishes
  first and last inside each write's MULTI/EXEC.

Redis runs a transaction without interleaving, so the notifications between a begin and
its change event are exactly that write's: the change event names the extension, and only
it is re-read. A notification outside a bracket is a write we cannot name (``redis-cli
HSET``): the whole domain is dropped and reloaded on its next lookup.

:class:`NotificationRouter` is that rule, pure; :class:`InvalidationListener` is the
connection: it turns keyspace notifications on (``CONFIG SET``, merged with what is set),
subscribes, and flushes the cache whenever it is not sure to see every change.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import redis.asyncio
import redis.exceptions

from cti import redis_keys
from cti.changes import DirectoryChange

log = logging.getLogger(__name__)

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

    def __init__(self, actions: CacheActions, db: int = 0) -> None:
        self.actions = actions
        self.keyspace_prefix = f"__keyspace@{db}__:"
        self._bracket: list[str] | None = None  # keys touched since a write-begin

    @property
    def patterns(self) -> tuple[str, ...]:
        return (self.keyspace_prefix + "cti_*",)

    @property
    def channels(self) -> tuple[str, ...]:
        return (redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, redis_keys.DIRECTORY_CHANGES_CHANNEL)

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

    def _close_unexplained(self) -> None:
        """A begin without its change event (should not happen): its keys are unknown."""
        touched, self._bracket = self._bracket, None
        for key in touched or ():
            self._unexplained(key)

    def _unexplained(self, key: str) -> None:
        domain = redis_keys.domain_of_extensions_key(key)
        if domain is not None:
            self.actions.invalidate_domain(domain)
        elif key in (redis_keys.TEMPLATES, redis_keys.DOMAINS):
            self.actions.invalidate_shared()


class Liveness(Protocol):
    def go_live(self) -> None: ...
    def go_dark(self) -> None: ...


class _CacheLike(CacheActions, Liveness, Protocol):
    enabled: bool
    live: bool


class InvalidationListener:
    """Keeps one subscription alive; the cache is live only while it is."""

    RETRY_MIN, RETRY_MAX = 0.05, 1.0

    def __init__(self, client: redis.asyncio.Redis, cache: _CacheLike) -> None:
        self.client = client
        self.cache = cache
        # A cluster client has no single pool (and only db 0).
        pool = getattr(client, "connection_pool", None)
        db = int(getattr(pool, "connection_kwargs", {}).get("db", 0))
        self.router = NotificationRouter(cache, db)

    async def run(self) -> None:
        delay = self.RETRY_MIN
        while True:
            try:
                if not await self._enable_notifications():
                    self.cache.enabled = False
                    return
                await self._listen()
            except asyncio.CancelledError:
                self.cache.go_dark()
                raise
            except (redis.exceptions.RedisError, OSError) as exc:
                if self.cache.live:  # once per outage, not once per retry
                    log.warning(
                        "directory cache subscriber lost (%s); not caching until back",
                        type(exc).__name__,
                    )
                self.cache.go_dark()
            except Exception:
                # A client that cannot subscribe at all (e.g. a Redis Cluster client):
                # stay correct without the cache rather than die.
                log.exception("directory cache subscriber failed; cache DISABLED")
                self.cache.go_dark()
                self.cache.enabled = False
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.RETRY_MAX)

    async def _enable_notifications(self) -> bool:
        """``CONFIG SET notify-keyspace-events`` if needed (again after every reconnect: a
        restarted Redis forgets it). ``False`` if Redis refuses CONFIG (managed Redis)."""
        try:
            current = await self.client.config_get("notify-keyspace-events")
            flags = _text(current.get("notify-keyspace-events", ""))
            merged = merged_notify_flags(flags)
            if merged is not None:
                await self.client.config_set("notify-keyspace-events", merged)
        except redis.exceptions.ResponseError as exc:
            log.warning(
                "Redis refuses CONFIG (%s): cannot enable keyspace notifications, so the "
                "directory cache is DISABLED and every lookup reads Redis. Set "
                "notify-keyspace-events to include '%s' and allow CONFIG GET to cache again.",
                exc,
                REQUIRED_NOTIFY_FLAGS,
            )
            return False
        return True

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            await pubsub.psubscribe(*self.router.patterns)
            await pubsub.subscribe(*self.router.channels)
            pending = len(self.router.patterns) + len(self.router.channels)
            while True:
                message = await pubsub.get_message(timeout=5.0)
                if message is None:
                    await pubsub.ping()  # a dead connection raises here
                    continue
                kind = message["type"]
                if kind in ("subscribe", "psubscribe"):
                    pending -= 1
                    if pending <= 0:  # also after any re-subscription: flush, then live
                        self.cache.go_live()
                        log.info("directory cache live (keyspace notifications subscribed)")
                elif kind in ("message", "pmessage"):
                    self.router.handle(_text(message["channel"]), message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
