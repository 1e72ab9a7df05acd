"""Writes by hand (``redis-cli``, a GUI writing ``cti_exten@<domain>`` directly) turned
into the precise change events an API write publishes, once for the whole deployment.

One event-service replica at a time (a Redis lease, ``cti:events:lease:directory-watch``)
keeps a digest of every field of the directory hashes. It follows the same stream the
directory replicas do (keyspace notifications plus the API's write brackets, read by the
directory's own :class:`~directory_service.lookup.notifications.NotificationRouter`), so it tells
API writes (already published and flushed) from writes by hand. Hand-written keys are
collected for :data:`WINDOW_SECONDS` (a burst is one read per key; while writes keep coming,
reads of a big hash are spaced by their own duration, never later than
:data:`MAX_WAIT_SECONDS` after the first write), re-read in chunks (``HSCAN``, see
:class:`HashScan`: Redis is never blocked for more than one chunk, and a chunk identical
to the last read of it costs one C-speed hash, not a digest per field), diffed against the
digests, and published (what goes out: :mod:`event_service.ingest.directory_diff`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis

from cti import redis_client, redis_keys
from cti.changes import DirectoryChange
from directory_service.lookup.notifications import NotificationRouter, merged_notify_flags
from event_service import metrics
from event_service.ingest.directory_diff import (
    Chunk,
    FieldDigest,
    HashScan,
    changes_to_publish,
    digest_of,
    field_name,
    forget_chunks,
    read_due,
    read_marker,
)
from event_service.ingest.lease import Lease

log = logging.getLogger(__name__)

SCAN_COUNT = 500
"""Fields per ``HSCAN`` chunk: about 250 KB and 1 ms of Redis for the directory's typical
500-byte extensions, the longest other clients wait for the watch."""
COVER_SECONDS = 5.0
"""Our own ``read`` marker not heard back by then: stop counting on it (see ``_mark``)."""
ALIVE_SECONDS = 1.0
LEASE_NAME = "directory-watch"


def _raw_reply(response: Any, **options: Any) -> Any:
    """``HSCAN``'s reply as Redis sent it (redis-py would build a dict of it)."""
    return response


class DirectoryWatch(threading.Thread):
    """The leased watcher (see the module docstring); one per event-service process, one
    of which leads."""

    def __init__(
        self,
        redis_url: str,
        owner: str,
        lease_seconds: float,
        *,
        registration_hash: str,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="directory-watch", daemon=True)
        self.redis_url = redis_url
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.registration_hash = registration_hash
        self.stop_event = stop
        self.leading = threading.Event()
        self.fields: dict[str, dict[str, FieldDigest]] = {}
        self.reads = 0
        """Full re-reads done (the initial ones included)."""
        self._chunks: dict[str, dict[int, Chunk]] = {}
        self._dirty: set[str] = set()
        self._silent: set[str] = set()
        """Keys an API write changed beyond what its change event names (a template, a
        whole domain): published already, only re-digested."""
        self._api_closing = False
        self._api: dict[str, set[str]] = {}
        self._dirty_since = 0.0
        self._read_id = random.randrange(1 << 40)
        """Read ids go on from a random start: a new leader's never match an old one's."""
        self._queue: list[tuple[str, bool]] = []
        """The keys of the batch being read: (key, publish its changes)."""
        self._batch_api: dict[str, set[str]] = {}
        self._batch_started = 0.0
        self._scan: HashScan | None = None
        self._scan_publishes = False
        self._covered: dict[str, tuple[int, float]] = {}
        """key -> (id, when published) of our own ``read`` marker not yet heard back."""
        self._last_read_end = 0.0
        self._last_read_seconds = 0.0

    # -- the cache actions the notification router calls ---------------------------------

    def invalidate_domain(self, domain: str) -> None:
        self._mark(redis_keys.extensions(domain))

    def invalidate_shared(self) -> None:
        self._mark(redis_keys.TEMPLATES)
        self._mark(redis_keys.DOMAINS)

    def refresh_extension(self, domain: str, user_id: str) -> None:
        """An API write: published and flushed already; only our digest follows it."""
        self._api.setdefault(redis_keys.extensions(domain), set()).add(user_id)

    def _mark(self, key: str) -> None:
        """A write of ``key``. If our own ``read`` marker for it was published but is not
        yet heard back, this notification comes before the marker in our stream: the
        write came before the read's first chunk, which (being under way or done) covers
        it. Otherwise the key is read again."""
        if key in self._covered:
            return
        if not self._dirty and not self._silent:
            self._dirty_since = time.monotonic()
        (self._silent if self._api_closing else self._dirty).add(key)

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        warned = False
        while not self.stop_event.is_set():
            client = redis_client.connect(self.redis_url)
            lease = Lease(
                client,
                LEASE_NAME,
                self.owner,
                self.lease_seconds,
                registration_hash=self.registration_hash,
            )
            try:
                if lease.acquire():
                    log.info("watching the directory for writes by hand (this replica leads)")
                    self._lead(client, lease)
                warned = False
            except redis.RedisError as exc:
                if not warned:
                    log.warning(
                        "directory watch: Redis unavailable (%s), retrying",
                        exc.__class__.__name__,
                    )
                    warned = True
            finally:
                self.leading.clear()
                client.close()
            self.stop_event.wait(lease.renew_interval)

    def _lead(self, client: redis.Redis, lease: Lease) -> None:
        db = int(client.connection_pool.connection_kwargs.get("db", 0))
        flags = str(client.config_get("notify-keyspace-events").get("notify-keyspace-events", ""))
        merged = merged_notify_flags(flags)
        if merged is not None:
            client.config_set("notify-keyspace-events", merged)
        client.set_response_callback("HSCAN", _raw_reply)
        router = NotificationRouter(self, db)
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.psubscribe(*router.patterns)
            pubsub.subscribe(*router.channels, redis_keys.DIRECTORY_HAND_WRITES_CHANNEL)
            self._load(client, lease)
            self.leading.set()
            renew_at = alive_at = 0.0
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= renew_at:
                    if not lease.keep().held:
                        log.info("directory watch: another replica leads now")
                        return
                    renew_at = now + lease.renew_interval
                if now >= alive_at:
                    self._announce(client)
                    alive_at = now + ALIVE_SECONDS
                reading = self._scan is not None or bool(self._queue)
                self._drain(pubsub, router, wait=0.0 if reading else 0.05)
                if self._covered:
                    self._uncover_stale(time.monotonic())
                if reading:
                    self._advance(client)  # one chunk, then the messages again
                elif router.bracket_open:
                    continue  # its change event is in the same EXEC: next message
                elif self._due(time.monotonic()):
                    self._begin_batch()
                elif self._api:
                    self._follow_api(client)
        finally:
            pubsub.close()

    def _drain(self, pubsub: Any, router: NotificationRouter, *, wait: float) -> None:
        """Every message already there (the first waited for up to ``wait`` seconds)."""
        for _ in range(1000):
            message = pubsub.get_message(timeout=wait)
            if message is None:
                return
            wait = 0.0
            if message["type"] in ("message", "pmessage"):
                self._route(router, message["channel"], message["data"])

    def _route(self, router: NotificationRouter, channel: bytes | str, data: bytes) -> None:
        """What the router invalidates while it closes an API write's bracket is that
        write's doing (already published): re-digested, not published again."""
        name = field_name(channel)
        if name == redis_keys.DIRECTORY_HAND_WRITES_CHANNEL:
            self._heard_own(data)
            return
        self._api_closing = name == redis_keys.DIRECTORY_CHANGES_CHANNEL and router.bracket_open
        try:
            router.handle(name, data)
        finally:
            self._api_closing = False

    def _heard_own(self, data: bytes) -> None:
        """Our ``read`` marker came back: notifications after it are not covered."""
        marker = read_marker(data)
        if marker is None:
            return
        key, read_id = marker
        covered = self._covered.get(key)
        if covered is not None and covered[0] == read_id:
            del self._covered[key]

    def _uncover_stale(self, now: float) -> None:
        """A marker not heard back in time (never seen: Redis drops a subscriber it
        cannot deliver to, which ends this lead): read the key again, to be safe."""
        for key, (_, published) in list(self._covered.items()):
            if now - published > COVER_SECONDS:
                del self._covered[key]
                self._mark(key)

    def _announce(self, client: redis.Redis) -> None:
        """``alive``, and ``reading`` for the read under way (replicas wait for it)."""
        pipe = client.pipeline(transaction=False)
        pipe.publish(redis_keys.DIRECTORY_HAND_WRITES_CHANNEL, '{"type":"alive"}')
        scan = self._scan
        domain = redis_keys.domain_of_extensions_key(scan.key) if scan is not None else None
        if scan is not None and domain is not None and self._scan_publishes:
            reading = {"type": "reading", "domain": domain, "id": scan.read_id}
            pipe.publish(redis_keys.DIRECTORY_HAND_WRITES_CHANNEL, json.dumps(reading))
        pipe.execute()

    def _due(self, now: float) -> bool:
        if not (self._dirty or self._silent):
            return False
        return read_due(now, self._dirty_since, self._last_read_end, self._last_read_seconds)

    # -- reading and publishing ----------------------------------------------------------

    def _load(self, client: redis.Redis, lease: Lease) -> None:
        """Digest everything once, on taking the lead (in chunks, like every read)."""
        self.fields = {}
        self._chunks = {}
        self._dirty.clear()
        self._silent.clear()
        self._api.clear()
        self._queue = []
        self._scan = None
        self._covered.clear()
        keys = [redis_keys.TEMPLATES, redis_keys.DOMAINS]
        keys += [
            field_name(k)
            for k in client.scan_iter(match=redis_keys.EXTENSIONS_PREFIX + "*", count=1000)
        ]
        renew_at = time.monotonic() + lease.renew_interval
        for key in keys:
            if client.type(key) not in (b"hash", "hash"):
                continue
            scan = HashScan(key, None, {}, extension=key.startswith(redis_keys.EXTENSIONS_PREFIX))
            while not scan.finished:
                self._step(client, scan)
            self._keep(scan)
            if time.monotonic() >= renew_at:  # thousands of domains: keep the lease
                if not lease.keep().held:
                    raise redis.RedisError("directory watch: lease lost while loading")
                renew_at = time.monotonic() + lease.renew_interval

    def _step(self, client: redis.Redis, scan: HashScan) -> None:
        """One chunk of ``scan`` (a key that is not a hash reads as empty)."""
        try:
            cursor, items = client.execute_command(  # type: ignore[no-untyped-call]
                "HSCAN", scan.key, scan.cursor, "COUNT", SCAN_COUNT
            )
        except redis.ResponseError:
            cursor, items = 0, []
        scan.feed(int(cursor), items)

    def _keep(self, scan: HashScan) -> None:
        self.fields[scan.key] = scan.fields
        self._chunks[scan.key] = scan.chunks
        self.reads += 1
        metrics.HAND_READS.inc()

    def _follow_api(self, client: redis.Redis) -> None:
        """Digest the fields API writes changed (one HMGET per key, no full read)."""
        api, self._api = self._api, {}
        for key, names in api.items():
            known = self.fields.get(key)
            if known is None:
                continue
            ordered = sorted(names)
            values = client.hmget(key, ordered)
            for name, value in zip(ordered, values, strict=True):
                if value is None:
                    known.pop(name, None)
                else:
                    known[name] = digest_of(value, extension=True)
            forget_chunks(self._chunks, key, names)

    def _begin_batch(self) -> None:
        """Take every key written by hand so far: read one after the other."""
        dirty, self._dirty = self._dirty, set()
        silent, self._silent = self._silent - dirty, set()
        api, self._api = self._api, {}
        self._batch_api = {k: n for k, n in api.items() if k in dirty or k in silent}
        for key, names in api.items():
            if key not in self._batch_api:
                self._api.setdefault(key, set()).update(names)
        self._queue = [(k, False) for k in sorted(silent)] + [(k, True) for k in sorted(dirty)]
        self._batch_started = time.monotonic()

    def _advance(self, client: redis.Redis) -> None:
        """One step of the batch: begin the next key's read, or read one more chunk."""
        scan = self._scan
        if scan is None:
            key, publishes = self._queue.pop(0)
            self._begin_read(client, key, publishes)
            return
        self._step(client, scan)
        if not scan.finished:
            return
        self._scan = None
        self._keep(scan)
        if self._scan_publishes:
            self._publish(client, scan)
        if not self._queue:
            self._last_read_end = time.monotonic()
            self._last_read_seconds = self._last_read_end - self._batch_started

    def _begin_read(self, client: redis.Redis, key: str, publishes: bool) -> None:
        """The ``read`` marker goes out before the first chunk, on the same connection:
        every write notified before it is seen by every chunk."""
        domain = redis_keys.domain_of_extensions_key(key)
        self._read_id += 1
        if publishes and domain is not None:
            marker = {"type": "read", "domain": domain, "id": self._read_id}
            client.publish(redis_keys.DIRECTORY_HAND_WRITES_CHANNEL, json.dumps(marker))
            self._covered[key] = (self._read_id, time.monotonic())
        self._scan = HashScan(
            key,
            self.fields.get(key),
            self._chunks.get(key, {}),
            extension=domain is not None,
            read_id=self._read_id,
        )
        self._scan_publishes = publishes

    def _publish(self, client: redis.Redis, scan: HashScan) -> None:
        # API writes during the read too: published by the API already
        by_api = self._batch_api.get(scan.key, set()) | self._api.get(scan.key, set())
        changes, done = changes_to_publish(scan, by_api)
        if done is not None:
            if done.get("whole"):
                metrics.HAND_CHANGES.labels("domain").inc()
            else:
                metrics.HAND_CHANGES.labels("extension").inc(len(changes))
        self._send(client, changes, done)

    def _send(
        self,
        client: redis.Redis,
        changes: list[DirectoryChange],
        done: Mapping[str, object] | None,
    ) -> None:
        """The changes, then ``done``, in one MULTI/EXEC."""
        if not changes and done is None:
            return
        pipe = client.pipeline(transaction=True)
        for change in changes:
            pipe.publish(redis_keys.DIRECTORY_CHANGES_CHANNEL, change.to_json())
        if done is not None:
            pipe.publish(redis_keys.DIRECTORY_HAND_WRITES_CHANNEL, json.dumps(done))
        pipe.execute()
        if changes:
            log.info(
                "published writes by hand as directory changes",
                extra={"changes": len(changes), "kind": changes[0].kind},
            )
