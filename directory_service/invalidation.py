"""Redis tells every replica what changed; this turns its messages into cache actions.

One subscriber connection per notifying server (the server, the Sentinel master, or each
Redis Cluster primary: :mod:`directory_service.notify_nodes`) receives, in that server's
own order:

- keyspace notifications ``__keyspace@<db>__:<key>`` for every ``cti_*`` key it holds,
  whoever wrote;
- ``cti:directory:write-begin`` and ``cti:directory:changes``, which the gRPC API publishes
  first and last inside each write's MULTI/EXEC.

Redis runs a transaction without interleaving, so the notifications between a begin and
its change event are exactly that write's: the change event names the extension, and only
it is re-read. A notification outside a bracket is a write we cannot name (``redis-cli
HSET``): the whole domain is dropped and reloaded on its next lookup. On a Cluster the
transaction runs on the node holding the domain, whose connection sees the bracket in
order; the other nodes get the two publishes over the cluster bus with none of its
notifications, so there the bracket explains nothing and changes nothing. Each
connection therefore has its own :class:`NotificationRouter`.

:class:`NotificationRouter` is that rule, pure; :class:`InvalidationListener` holds the
connections: it turns keyspace notifications on (``CONFIG SET``, merged with what is set),
subscribes, and flushes the cache whenever it is not sure to see every change (any
connection lost, or the cluster's primaries changed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, Protocol

import redis.asyncio
import redis.exceptions

from cti import redis_keys
from cti.changes import DirectoryChange
from directory_service.hand_writes import HandWrites
from directory_service.notify_nodes import NotifyNodes

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


class Liveness(Protocol):
    def go_live(self) -> None: ...
    def go_dark(self) -> None: ...


class _CacheLike(CacheActions, Liveness, Protocol):
    enabled: bool
    live: bool


class TopologyChanged(Exception):
    """The servers to subscribe to are no longer those subscribed (cluster failover or
    resharding): start over with the new ones."""


_TRANSIENT = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)


class InvalidationListener:
    """Keeps one subscription per notifying server alive (one for a single server or
    Sentinel, one per primary on a Cluster); the cache is live only while all are."""

    RETRY_MIN, RETRY_MAX = 0.05, 1.0
    IDLE_PING_SECONDS = 5.0
    BRACKET_MAX_SECONDS = 1.0
    """A write-begin whose change event has not come by then is closed as unexplained. On
    its own node both arrive together (one EXEC); on the other nodes of a cluster they come
    over the cluster bus, which may lose them: without this, a lost change event would
    leave that node's later hand writes waiting for it forever."""

    def __init__(self, nodes: NotifyNodes, cache: _CacheLike) -> None:
        self.nodes = nodes
        self.cache = cache

    async def run(self) -> None:
        delay = self.RETRY_MIN
        while True:
            try:
                await self._subscribe_all()
                return  # CONFIG refused: the cache is disabled
            except asyncio.CancelledError:
                self.cache.go_dark()
                await self.nodes.aclose()
                raise
            except TopologyChanged:
                log.info("Redis Cluster primaries changed; resubscribing, not caching until then")
                self.cache.go_dark()
                delay = self.RETRY_MIN
                continue
            except _TRANSIENT as exc:
                if self.cache.live:  # once per outage, not once per retry
                    log.warning(
                        "directory cache subscriber lost (%s); not caching until back",
                        type(exc).__name__,
                    )
                self.cache.go_dark()
            except Exception:
                # A client that cannot subscribe at all: stay correct without the cache
                # rather than die.
                log.exception("directory cache subscriber failed; cache DISABLED")
                self.cache.go_dark()
                self.cache.enabled = False
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.RETRY_MAX)

    async def _subscribe_all(self) -> None:
        """Subscribe to every node and listen until one fails or the topology changes
        (raises); return only if a node refuses CONFIG (cache disabled)."""
        clients = await self.nodes.discover()
        try:
            for client in clients:
                if not await self._enable_notifications(client):
                    self.cache.enabled = False
                    return
            subscribed: set[int] = set()

            def on_subscribed(index: int) -> None:
                subscribed.add(index)
                if len(subscribed) == len(clients):  # also after any re-subscription
                    self.cache.go_live()  # flush, then live
                    log.info(
                        "directory cache live (keyspace notifications subscribed on %d "
                        "Redis node(s))",
                        len(clients),
                    )

            listeners = [
                self._listen(
                    client,
                    NotificationRouter(self.cache, self.nodes.db, HandWrites(self.cache)),
                    partial(on_subscribed, index),
                )
                for index, client in enumerate(clients)
            ]
            await _until_first_failure([*listeners, self._watch_topology()])
        finally:
            await self.nodes.release(clients)

    async def _watch_topology(self) -> None:
        await self.nodes.changed()
        raise TopologyChanged

    async def _enable_notifications(self, client: redis.asyncio.Redis) -> bool:
        """``CONFIG SET notify-keyspace-events`` if needed (again after every reconnect: a
        restarted Redis forgets it). ``False`` if Redis refuses CONFIG (managed Redis)."""
        try:
            current = await client.config_get("notify-keyspace-events")
            flags = _text(current.get("notify-keyspace-events", ""))
            merged = merged_notify_flags(flags)
            if merged is not None:
                await client.config_set("notify-keyspace-events", merged)
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

    async def _listen(
        self,
        client: redis.asyncio.Redis,
        router: NotificationRouter,
        on_subscribed: Callable[[], None],
    ) -> None:
        """One node's subscription, until lost (raises). ``on_subscribed`` each time its
        subscriptions are all confirmed (again after redis-py re-subscribes on its own)."""
        loop = asyncio.get_running_loop()
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(*router.patterns)
            await pubsub.subscribe(*router.channels)
            pending = len(router.patterns) + len(router.channels)
            opened_at: float | None = None  # when the router's open bracket was noticed
            while True:
                wait = self.BRACKET_MAX_SECONDS if router.bracket_open else self.IDLE_PING_SECONDS
                message = await pubsub.get_message(timeout=wait)
                if message is None:
                    if router.bracket_open:
                        router.abandon_bracket()
                    await pubsub.ping()  # a dead connection raises here
                else:
                    kind = message["type"]
                    if kind in ("subscribe", "psubscribe"):
                        pending -= 1
                        if pending <= 0:
                            on_subscribed()
                    elif kind in ("message", "pmessage"):
                        router.handle(_text(message["channel"]), message["data"])
                if not router.bracket_open:
                    opened_at = None
                elif opened_at is None:
                    opened_at = loop.time()
                elif loop.time() - opened_at > self.BRACKET_MAX_SECONDS:
                    router.abandon_bracket()
                    opened_at = None
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _until_first_failure(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coroutines`` together until the first one ends (they are meant to run until
    they fail); stop the others and raise its exception."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(iter(done))
    first.result()  # raises its exception
    raise RuntimeError("a subscription ended without an error")


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
