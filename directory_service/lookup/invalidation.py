"""Redis tells every replica what changed; this turns its messages into cache actions.

One subscriber connection per notifying server (the server, the Sentinel master, or each
Redis Cluster primary: :mod:`directory_service.lookup.notify_nodes`) receives, in that server's
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

:class:`~directory_service.lookup.notifications.NotificationRouter` is that rule, pure
(:mod:`directory_service.lookup.notifications`); :class:`InvalidationListener` holds the
connections: it turns keyspace notifications on (``CONFIG SET``, merged with what is set),
subscribes, and flushes the cache whenever it is not sure to see every change (any
connection lost, or the cluster's primaries changed).

A subscription that is up does not prove notifications arrive: an operator, a Redis
restarted from a config without them or a managed Redis reset may turn them off
(``CONFIG SET notify-keyspace-events ""``), and a connection may stop delivering without
dropping. So each node's listener writes a canary key every :data:`CANARY_INTERVAL`
seconds and must hear its notification: a node is live only once it has, and a canary
unheard for :data:`CANARY_DEADLINE` seconds darkens the cache (one WARNING), restores the
flags where ``CONFIG`` is allowed, and resubscribes if that was not the cause. The cache
is live again once every node hears its canary. (That rule is
:class:`~directory_service.lookup.notifications.Canary`, pure.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import Any, Protocol

import redis.asyncio
import redis.exceptions

from cti.backoff import Backoff
from cti.text import redis_text
from directory_service.lookup.hand_writes import HandWrites
from directory_service.lookup.notifications import (
    CANARY_DEADLINE,
    CANARY_INTERVAL,
    REQUIRED_NOTIFY_FLAGS,
    CacheActions,
    Canary,
    NotificationRouter,
    merged_notify_flags,
)
from directory_service.lookup.notify_nodes import NotifyNodes

log = logging.getLogger(__name__)

CANARY_PREFIX = "cti:directory:canary:"
"""Not ``cti_*``: the router never sees the canary, and nothing else reads it."""
CANARY_TTL_MS = 10_000


class SubscriberStalled(Exception):
    """Notifications are enabled but this subscription hears none of its canary's: start
    it over."""


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
    Sentinel, one per primary on a Cluster); the cache is live only while every one is
    subscribed and hears its canary."""

    RETRY_MIN, RETRY_MAX = 0.05, 1.0
    IDLE_PING_SECONDS = 5.0
    BRACKET_MAX_SECONDS = 1.0
    """A write-begin whose change event has not come by then is closed as unexplained. On
    its own node both arrive together (one EXEC); on the other nodes of a cluster they come
    over the cluster bus, which may lose them: without this, a lost change event would
    leave that node's later hand writes waiting for it forever."""

    def __init__(
        self,
        nodes: NotifyNodes,
        cache: _CacheLike,
        canary_interval: float = CANARY_INTERVAL,
        canary_deadline: float = CANARY_DEADLINE,
    ) -> None:
        self.nodes = nodes
        self.cache = cache
        self.canary_interval = canary_interval
        self.canary_deadline = canary_deadline
        self.canary_base = CANARY_PREFIX + uuid.uuid4().hex
        self._silence_warned = False  # one WARNING per outage of notifications
        self._config_refused_warned = False

    async def run(self) -> None:
        backoff = Backoff(self.RETRY_MIN, self.RETRY_MAX)
        while True:
            try:
                await self._subscribe_all()
                return  # a client that cannot subscribe at all: the cache is disabled
            except asyncio.CancelledError:
                self.cache.go_dark()
                await self.nodes.aclose()
                raise
            except TopologyChanged:
                log.info("Redis Cluster primaries changed; resubscribing, not caching until then")
                self.cache.go_dark()
                backoff.reset()
                continue
            except SubscriberStalled:
                self.cache.go_dark()  # warned when the canary went unheard
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
            await asyncio.sleep(backoff.next())

    async def _subscribe_all(self) -> None:
        """Subscribe to every node and listen until one fails, goes silent or the
        topology changes (raises)."""
        clients = await self.nodes.discover()
        try:
            for client in clients:
                await self._enable_notifications(client)
            live_nodes: set[int] = set()

            def node_live(index: int) -> None:
                live_nodes.add(index)
                if len(live_nodes) == len(clients) and not self.cache.live:
                    self.cache.go_live()  # flush, then live
                    self._silence_warned = False
                    log.info(
                        "directory cache live (keyspace notifications arrive from %d "
                        "Redis node(s))",
                        len(clients),
                    )

            def node_dark(index: int) -> None:
                live_nodes.discard(index)
                self.cache.go_dark()

            listeners = [
                self._listen(
                    client,
                    NotificationRouter(self.cache, self.nodes.db, HandWrites(self.cache)),
                    self.nodes.canary_key(index, self.canary_base),
                    partial(node_live, index),
                    partial(node_dark, index),
                )
                for index, client in enumerate(clients)
            ]
            await _until_first_failure([*listeners, self._watch_topology()])
        finally:
            await self.nodes.release(clients)

    async def _watch_topology(self) -> None:
        await self.nodes.changed()
        raise TopologyChanged

    async def _enable_notifications(self, client: redis.asyncio.Redis) -> bool | None:
        """``CONFIG SET notify-keyspace-events`` if needed (again after every reconnect: a
        restarted Redis forgets it). True if it set them, False if they were set, None if
        Redis refuses CONFIG (managed Redis: then only the canary can tell)."""
        try:
            current = await client.config_get("notify-keyspace-events")
            flags = redis_text(current.get("notify-keyspace-events", ""))
            merged = merged_notify_flags(flags)
            if merged is None:
                return False
            await client.config_set("notify-keyspace-events", merged)
            return True
        except redis.exceptions.ResponseError as exc:
            if self._config_refused_warned:
                return None
            self._config_refused_warned = True
            log.warning(
                "Redis refuses CONFIG (%s): cannot enable keyspace notifications; the "
                "directory cache is used only while they arrive (set notify-keyspace-events "
                "to include '%s'), until then every lookup reads Redis.",
                exc,
                REQUIRED_NOTIFY_FLAGS,
            )
            return None

    async def _write_canary(self, client: redis.asyncio.Redis, key: str, sequence: int) -> bool:
        """HSET + PEXPIRE (notified under flags h and g). False if Redis refuses writes
        (a read-only user): then the subscription alone must be trusted."""
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hset(key, "seq", str(sequence))
                pipe.pexpire(key, CANARY_TTL_MS)
                await pipe.execute()
        except redis.exceptions.ResponseError as exc:
            log.warning(
                "cannot write the directory cache's canary key (%s): notifications that "
                "stop arriving go unnoticed",
                exc,
            )
            return False
        return True

    async def _silent(self, client: redis.asyncio.Redis, canary: Canary, now: float) -> None:
        """The canary went unheard: darken (one WARNING), restore the flags if they were
        turned off, else resubscribe (raises :class:`SubscriberStalled`)."""
        if not self._silence_warned:
            self._silence_warned = True
            log.warning(
                "keyspace notifications do not arrive (canary unheard for %.1f s); "
                "directory cache dark, every lookup reads Redis until they flow again",
                self.canary_deadline,
            )
        if await self._enable_notifications(client):
            log.info("notify-keyspace-events restored; waiting for the canary")
            canary.restart_wait(now)
            return
        raise SubscriberStalled

    async def _send_canary(
        self, client: redis.asyncio.Redis, canary: Canary, key: str, sequence: int, now: float
    ) -> bool:
        """Write the canary; False if this node refuses it (then trust the subscription:
        there is nothing to wait for)."""
        written = await self._write_canary(client, key, sequence)
        canary.wrote(now)
        if not written:
            canary.heard()
        return written

    def _time_bracket(
        self, router: NotificationRouter, opened_at: float | None, now: float
    ) -> float | None:
        """When the router's open bracket was first noticed; a bracket open longer than
        :attr:`BRACKET_MAX_SECONDS` is abandoned (its change event was lost)."""
        if not router.bracket_open:
            return None
        if opened_at is None:
            return now
        if now - opened_at > self.BRACKET_MAX_SECONDS:
            router.abandon_bracket()
            return None
        return opened_at

    async def _listen(
        self,
        client: redis.asyncio.Redis,
        router: NotificationRouter,
        canary_key: str,
        on_live: Callable[[], None],
        on_dark: Callable[[], None],
    ) -> None:
        """One node's subscription, until lost or silent (raises). ``on_live`` each time
        its subscriptions are all confirmed and its canary heard after that (again after
        redis-py re-subscribes on its own), ``on_dark`` when it must not be trusted."""
        loop = asyncio.get_running_loop()
        pubsub = client.pubsub()
        node = _Subscription(router, router.keyspace_prefix + canary_key, on_live, on_dark)
        canary = Canary(self.canary_interval, self.canary_deadline)
        canary_writes = True
        sequence = 0
        try:
            await pubsub.psubscribe(*router.patterns)
            await pubsub.subscribe(*router.channels, node.canary_channel)
            opened_at: float | None = None  # when the router's open bracket was noticed
            while True:
                now = loop.time()
                if canary_writes and canary.due(now):
                    sequence += 1
                    canary_writes = await self._send_canary(
                        client, canary, canary_key, sequence, now
                    )
                idle = self.BRACKET_MAX_SECONDS if router.bracket_open else self.IDLE_PING_SECONDS
                wait = canary.wait(loop.time(), idle) if canary_writes else idle
                message = await pubsub.get_message(timeout=wait)
                if message is not None:
                    node.received(message, canary)
                elif wait >= idle:  # (while the canary is written, it detects that too)
                    await pubsub.ping()  # a dead connection raises here
                now = loop.time()
                if node.pending <= 0 and canary.heard_since_start:
                    node.go_live()
                if canary_writes and canary.overdue(now):
                    node.go_dark()
                    canary.heard_since_start = False
                    await self._silent(client, canary, now)
                opened_at = self._time_bracket(router, opened_at, now)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


class _Subscription:
    """One node's subscription state: confirmations still awaited, and whether it is
    live (``on_live``/``on_dark`` are called on each change)."""

    def __init__(
        self,
        router: NotificationRouter,
        canary_channel: str,
        on_live: Callable[[], None],
        on_dark: Callable[[], None],
    ) -> None:
        self.router = router
        self.canary_channel = canary_channel
        self.pending = len(router.patterns) + len(router.channels) + 1
        self.live = False
        self._on_live, self._on_dark = on_live, on_dark

    def go_live(self) -> None:
        if not self.live:
            self.live = True
            self._on_live()

    def go_dark(self) -> None:
        if self.live:
            self.live = False
            self._on_dark()

    def received(self, message: Mapping[str, Any], canary: Canary) -> None:
        """A subscription confirmation, the canary, or a notification for the router."""
        kind = message["type"]
        if kind in ("subscribe", "psubscribe"):
            self.pending -= 1
            if self.pending < 0 and self.live:  # redis-py re-subscribed: a gap
                self.go_dark()
                canary.heard_since_start = False
        elif kind == "message" and redis_text(message["channel"]) == self.canary_channel:
            canary.heard()
        elif kind in ("message", "pmessage"):
            self.router.handle(redis_text(message["channel"]), message["data"])


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
