"""Writes by hand (``redis-cli``, a GUI writing ``cti_exten@<domain>`` directly) turned
into the precise change events an API write publishes, once for the whole deployment.

One event-service replica at a time (a Redis lease, ``cti:events:lease:directory-watch``)
keeps a digest of every field of the directory hashes. It follows the same stream the
directory replicas do (keyspace notifications plus the API's write brackets, read by the
directory's own :class:`~directory_service.lookup.notifications.NotificationRouter`), so it tells
API writes (already published and flushed) from writes by hand. Hand-written keys are
collected for :data:`WINDOW_SECONDS` (a burst is one read per key), re-read, diffed against
the digests, and published:

- on ``cti:directory:changes``: one :class:`~cti.changes.DirectoryChange` per changed
  extension (old and new alias), template or domain setting, so every replica's
  :class:`~event_service.flush.ChangeFlusher` flushes exactly those users on its own
  FreeSWITCH nodes. More than :data:`PRECISE_MAX` extensions of a domain at once (an
  import) is one ``domain`` change instead: one whole-cache flush, not thousands;
- on ``cti:directory:hand-writes`` (for the directory replicas,
  :mod:`directory_service.lookup.hand_writes`): ``read`` inside the same MULTI/EXEC as the
  re-read (notifications before it are covered by it), ``done`` with the extensions to
  re-read (or ``whole``), and ``alive`` every second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from cti import redis_client, redis_keys
from cti.changes import DirectoryChange
from directory_service.lookup.notifications import NotificationRouter, merged_notify_flags
from event_service import metrics
from event_service.lease import Lease

log = logging.getLogger(__name__)

WINDOW_SECONDS = 0.2
"""How long hand-written keys are collected before one re-read per key."""
PRECISE_MAX = 200
"""More changed extensions than this in one domain at once: one domain change."""
ALIVE_SECONDS = 1.0
LEASE_NAME = "directory-watch"


@dataclass(frozen=True)
class FieldDigest:
    digest: bytes
    alias: str = ""


def digest_of(
    value: bytes | str, *, extension: bool, previous: FieldDigest | None = None
) -> FieldDigest:
    """Pure: what is kept per field (8 bytes of BLAKE2b; the alias of an extension, as
    its old alias is to be flushed when it changes). An unchanged value keeps ``previous``
    (no JSON parsed: a re-read of 100,000 extensions parses only what changed)."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    digest = hashlib.blake2b(data, digest_size=8).digest()
    if previous is not None and previous.digest == digest:
        return previous
    alias = ""
    if extension:
        try:
            document = json.loads(data)
            attributes = document.get("attribute") if isinstance(document, dict) else None
            if isinstance(attributes, dict):
                alias = str(attributes.get("number-alias") or "")
        except ValueError:
            alias = ""
    return FieldDigest(digest, alias)


def digests(
    raw: Mapping[bytes | str, bytes | str],
    *,
    extension: bool,
    previous: Mapping[str, FieldDigest] | None = None,
) -> dict[str, FieldDigest]:
    known = previous or {}
    result = {}
    for name, value in raw.items():
        field = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
        result[field] = digest_of(value, extension=extension, previous=known.get(field))
    return result


def extension_changes(
    domain: str, old: Mapping[str, FieldDigest], new: Mapping[str, FieldDigest]
) -> list[DirectoryChange]:
    """Pure: one change per extension created, updated or deleted."""
    changes = []
    for name, now in new.items():
        before = old.get(name)
        if before is None:
            changes.append(DirectoryChange("extension", "create", domain, name, now.alias))
        elif before.digest != now.digest:
            old_alias = before.alias if before.alias != now.alias else ""
            changes.append(
                DirectoryChange("extension", "update", domain, name, now.alias, old_alias)
            )
    for name, before in old.items():
        if name not in new:
            changes.append(DirectoryChange("extension", "delete", domain, name, before.alias))
    return changes


def shared_changes(
    key: str, old: Mapping[str, FieldDigest], new: Mapping[str, FieldDigest]
) -> list[DirectoryChange]:
    """Pure: template or domain-setting changes (each flushes every cached user)."""
    changed = [n for n in new if n not in old or old[n].digest != new[n].digest]
    changed += [n for n in old if n not in new]
    if key == redis_keys.TEMPLATES:
        return [DirectoryChange("template", "update", template=n) for n in changed]
    return [DirectoryChange("domain", "update", domain=n) for n in changed]


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
        self._dirty: set[str] = set()
        self._silent: set[str] = set()
        """Keys an API write changed beyond what its change event names (a template, a
        whole domain): published already, only re-digested."""
        self._api_closing = False
        self._api: dict[str, set[str]] = {}
        self._dirty_since = 0.0
        self._read_id = 0

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
        router = NotificationRouter(self, db)
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.psubscribe(*router.patterns)
            pubsub.subscribe(*router.channels)
            self._load(client)
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
                    client.publish(redis_keys.DIRECTORY_HAND_WRITES_CHANNEL, '{"type":"alive"}')
                    alive_at = now + ALIVE_SECONDS
                message = pubsub.get_message(timeout=0.05)
                if message is not None and message["type"] in ("message", "pmessage"):
                    self._route(router, message["channel"], message["data"])
                if router.bracket_open:
                    continue  # its change event is in the same EXEC: next message
                pending = self._dirty or self._silent
                if pending and time.monotonic() - self._dirty_since >= WINDOW_SECONDS:
                    self._publish(client)
                elif self._api:
                    self._follow_api(client)
        finally:
            pubsub.close()

    def _route(self, router: NotificationRouter, channel: bytes | str, data: bytes) -> None:
        """What the router invalidates while it closes an API write's bracket is that
        write's doing (already published): re-digested, not published again."""
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        self._api_closing = name == redis_keys.DIRECTORY_CHANGES_CHANNEL and router.bracket_open
        try:
            router.handle(name, data)
        finally:
            self._api_closing = False

    # -- reading and publishing ----------------------------------------------------------

    def _load(self, client: redis.Redis) -> None:
        """Digest everything once, on taking the lead."""
        self.fields = {}
        keys = [redis_keys.TEMPLATES, redis_keys.DOMAINS]
        keys += [
            k.decode() if isinstance(k, bytes) else str(k)
            for k in client.scan_iter(match=redis_keys.EXTENSIONS_PREFIX + "*", count=1000)
        ]
        for key in keys:
            if client.type(key) in (b"hash", "hash"):
                extension = key.startswith(redis_keys.EXTENSIONS_PREFIX)
                self.fields[key] = digests(client.hgetall(key), extension=extension)
        self._dirty.clear()
        self._silent.clear()
        self._api.clear()

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

    def _publish(self, client: redis.Redis) -> None:
        dirty, self._dirty = self._dirty, set()
        silent, self._silent = self._silent - dirty, set()
        api, self._api = self._api, {}
        for key in sorted(silent):
            extension = key.startswith(redis_keys.EXTENSIONS_PREFIX)
            self.fields[key] = digests(client.hgetall(key), extension=extension)
        for key in sorted(dirty):
            domain = redis_keys.domain_of_extensions_key(key)
            self._read_id += 1
            pipe = client.pipeline(transaction=True)
            if domain is not None:
                marker = {"type": "read", "domain": domain, "id": self._read_id}
                pipe.publish(redis_keys.DIRECTORY_HAND_WRITES_CHANNEL, json.dumps(marker))
            pipe.hgetall(key)
            raw = pipe.execute()[-1]
            old = self.fields.get(key)
            new = digests(raw, extension=domain is not None, previous=old)
            self.fields[key] = new
            if domain is None:
                self._send(client, shared_changes(key, old or {}, new)[:1] or [], None)
                continue
            changes = (
                [
                    c
                    for c in extension_changes(domain, old, new)
                    if c.extension not in api.get(key, ())
                ]
                if old is not None
                else None
            )
            done: dict[str, object] = {"type": "done", "domain": domain, "id": self._read_id}
            if changes is None or len(changes) > PRECISE_MAX:
                changes = [DirectoryChange("domain", "update", domain)]
                done["whole"] = True
                metrics.HAND_CHANGES.labels("domain").inc()
            else:
                done["extensions"] = [c.extension for c in changes]
                metrics.HAND_CHANGES.labels("extension").inc(len(changes))
            self._send(client, changes, done)
        for key, names in api.items():
            if key not in dirty and key not in silent:
                self._api.setdefault(key, set()).update(names)

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
