"""Watch = one consistent snapshot of the state hashes, then the change log from exactly
that point: no gap, no duplicate.

Why it is exact: the core writes every state change as one MULTI/EXEC holding the hash
write *and* its ``XADD`` to the change log (``cti:events:log``, see
:func:`cti.redis_keys.events_log`). :meth:`ChangeLog.snapshot` reads the
hashes and the log's last id in one MULTI/EXEC too, so the snapshot contains precisely the
changes up to that id, and ``XREAD`` from it returns precisely the ones after.

The log is capped (``MAXLEN ~ 100000``); a reader that falls that far behind, or resumes
from a revision already trimmed, or finds the log reset (Redis flushed or restarted empty)
gets :class:`LogGap` instead of silently missing changes.

:class:`WatchView` (pure) turns snapshot entries and changes into ``WatchEvent``
events for one watcher's kinds and filter; :func:`batches` packs them into stream
messages (gRPC costs ~100 µs per message in Python, so one event per message would cap a
stream at ~10,000 events/s).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis

from cti import redis_keys
from cti.text import display_text, redis_text
from cti.v1 import events_pb2
from event_service.api.messages import (
    Kind,
    StateFilter,
    extension_calls_message,
    registration_message,
    resource_name,
)
from event_service.ingest import calls

log = logging.getLogger(__name__)

Op = Literal["set", "update", "delete"]
ALL_KINDS: tuple[Kind, ...] = ("registration", "call")
ALL_OPS: tuple[Op, ...] = ("set", "update", "delete")
START = "0-0"
"""The revision before any change (the log did not exist yet)."""

_REVISION = re.compile(r"^\d{1,20}-\d{1,20}$")
_STREAM_ID_PART_MAX = 2**64 - 1
"""Redis stream ids are two unsigned 64-bit numbers; Redis refuses anything larger."""
Event = events_pb2.WatchEvent
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 1 << 20
"""A stream message carries at most this much (clients accept 4 MiB by default)."""
_KIND_ENUM: dict[Kind, events_pb2.WatchKind.ValueType] = {
    "registration": events_pb2.WATCH_KIND_REGISTRATIONS,
    "call": events_pb2.WATCH_KIND_EXTENSION_CALLS,
}
_KIND_OF: dict[int, Kind] = {number: kind for kind, number in _KIND_ENUM.items()}


class LogGap(Exception):
    """Changes after the requested revision are no longer in the log: watch afresh."""


def parse_revision(text: str) -> tuple[int, int]:
    """``1700000000000-3`` -> (1700000000000, 3); ValueError if it is not a stream id."""
    if not _REVISION.match(text):
        raise ValueError(f"{text!r} is not a revision (<milliseconds>-<sequence>)")
    ms, _, seq = text.partition("-")
    revision = int(ms), int(seq)
    if max(revision) > _STREAM_ID_PART_MAX:
        raise ValueError(f"{text!r} is not a revision (each part at most {_STREAM_ID_PART_MAX})")
    return revision


@dataclass(frozen=True)
class Change:
    """One entry of the change log."""

    revision: str
    kind: Kind
    op: Op
    key: str
    value: bytes
    node: str


def parse_change(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> Change | None:
    """The typed entry, or ``None`` (logged) for an entry not in the agreed format."""
    revision = redis_text(entry_id)
    kind = display_text(fields.get(b"kind", b""))
    op = display_text(fields.get(b"op", b""))
    key = redis_text(fields.get(b"key", b""))
    if (
        kind not in ALL_KINDS
        or op not in ALL_OPS
        or not key
        or (op, kind) == ("update", "registration")
    ):
        log.warning("skipping change-log entry not in the agreed format", extra={"id": revision})
        return None
    return Change(
        revision=revision,
        kind=kind,
        op=op,
        key=key,
        value=fields.get(b"value", b""),
        node=display_text(fields.get(b"node", b"")),
    )


@dataclass(frozen=True)
class Snapshot:
    """The hashes as they were at ``revision`` (every change up to it included)."""

    revision: str
    entries: Mapping[Kind, Mapping[str, bytes]]


# ---------------------------------------------------------------------------------------
# Redis I/O


class ChangeLog:
    """Snapshot and change reads for Watch over one Redis."""

    def __init__(self, client: redis.Redis, hashes: Mapping[Kind, str]) -> None:
        self._client = client
        self._hashes = dict(hashes)
        # The log the core writes beside these hashes (same builder, same cluster slot).
        self._stream = redis_keys.events_log(self._hashes["registration"])

    def snapshot(self, kinds: Iterable[Kind]) -> Snapshot:
        """The hashes of ``kinds`` and the log position, in one MULTI/EXEC."""
        wanted = [kind for kind in ALL_KINDS if kind in set(kinds)]
        with self._client.pipeline(transaction=True) as pipe:
            for kind in wanted:
                pipe.hgetall(self._hashes[kind])
            pipe.xinfo_stream(self._stream)
            results = pipe.execute(raise_on_error=False)
        *hashes, info = results
        for result in hashes:
            if isinstance(result, Exception):
                raise result
        entries = {
            kind: {redis_text(k): v for k, v in values.items()}
            for kind, values in zip(wanted, hashes, strict=True)
        }
        return Snapshot(revision=_last_id(info), entries=entries)

    def read(self, after: str, block_ms: int | None, count: int) -> tuple[list[Change], str]:
        """Changes after ``after`` (waiting up to ``block_ms`` for the first one), and the
        new position (past entries skipped as malformed too).

        Raises :class:`LogGap` when entries after ``after`` may have been trimmed or the
        log was reset. The check runs in the same round trip, right after the XREAD, so a
        log that still holds ``after``'s successors then held them during the read.
        """
        with self._client.pipeline(transaction=False) as pipe:
            pipe.xread({self._stream: after}, count=count, block=block_ms)
            pipe.xinfo_stream(self._stream)
            read, info = pipe.execute(raise_on_error=False)
        if isinstance(read, Exception):
            raise read
        _check_reaches(info, after)
        changes: list[Change] = []
        position = after
        for _stream, entries in read or ():
            for entry_id, fields in entries:
                position = redis_text(entry_id)
                change = parse_change(entry_id, fields)
                if change is not None:
                    changes.append(change)
        return changes, position


def _no_log(info: Any) -> bool:
    """XINFO STREAM's answer when the log does not exist (yet, or after a flush)."""
    return isinstance(info, redis.ResponseError) and "no such key" in str(info).lower()


def _info(info: Any, name: str, default: Any = None) -> Any:
    """One field of an XINFO STREAM answer. redis-py parses it into a dict with str keys,
    except inside a Redis Cluster transaction, where the keys stay bytes."""
    if name in info:
        return info[name]
    return info.get(name.encode(), default)


def _last_id(info: Any) -> str:
    if _no_log(info):  # no log yet: every change is after START
        return START
    if isinstance(info, Exception):
        raise info
    return redis_text(_info(info, "last-generated-id"))


def _check_reaches(info: Any, after: str) -> None:
    """Raise :class:`LogGap` unless every entry after ``after`` is still in the log."""
    position = parse_revision(after)
    if _no_log(info):
        if after != START:
            raise LogGap("the change log was reset (Redis flushed or restarted)")
        return
    if isinstance(info, Exception):
        raise info
    if parse_revision(redis_text(_info(info, "last-generated-id"))) < position:
        raise LogGap(f"revision {after} is newer than the change log (was it reset?)")
    length = int(_info(info, "length", 0))
    if after == START:
        added = _info(info, "entries-added")
        if added is not None and int(added) > length:
            raise LogGap("the change log no longer holds its first entries")
        return
    first = _info(info, "first-entry")
    if length and first and parse_revision(redis_text(first[0])) > position:
        raise LogGap(f"changes after revision {after} were trimmed from the change log")
    if not length and parse_revision(redis_text(_info(info, "last-generated-id"))) > position:
        raise LogGap(f"changes after revision {after} were removed from the change log")


# ---------------------------------------------------------------------------------------
# Pure: what one watcher is told


class WatchView:
    """One watcher's picture: which entries it has been shown, so a deletion or an entry
    leaving the filter becomes ``TYPE_DELETE`` exactly when the client holds it.

    After a resume the client's picture is unknown: an entry not seen since is assumed
    held, so its first deletion (or non-matching update) is sent once.

    Call records: the log carries ``update`` deltas. A watcher that asked for
    ``call_changes`` gets them as ``CallChange`` (constant size); any other gets the whole
    record, rebuilt here from the snapshot's value and the deltas since (:attr:`records`;
    see :meth:`rebase` for a resumed stream).
    """

    def __init__(
        self,
        kinds: Iterable[Kind],
        state_filter: StateFilter,
        resumed: bool,
        cache: UpsertCache | None = None,
        call_changes: bool = False,
    ) -> None:
        self.kinds = frozenset(kinds)
        self.filter = state_filter
        self.call_changes = call_changes
        self._resumed = resumed
        self._cache = cache
        self._shown: dict[tuple[Kind, str], bool] = {}
        self.records: dict[str, bytes | calls.CallRecord] = {}
        """The whole call records as of the last change read (whole-record watchers)."""

    @property
    def rebuilds_records(self) -> bool:
        return "call" in self.kinds and not self.call_changes

    def snapshot(self, snapshot: Snapshot) -> Iterator[Event]:
        if self.rebuilds_records:
            self.records = dict(snapshot.entries.get("call", {}))
        for kind in ALL_KINDS:
            if kind not in self.kinds:
                continue
            entries = snapshot.entries.get(kind, {})
            for key in sorted(entries):
                event = upsert_event(kind, key, entries[key], snapshot.revision, "")
                if self._show(event):
                    event.type = Event.TYPE_SNAPSHOT
                    yield event
        yield Event(type=Event.TYPE_SNAPSHOT_COMPLETE, revision=snapshot.revision)

    def rebase(self, snapshot: Snapshot, changes: Iterable[Change]) -> Iterator[Event]:
        """A resumed whole-record watcher: it holds the records as of its token, we hold
        none. ``changes`` are the log entries after the token up to ``snapshot.revision``
        (a snapshot of the call hash taken after them): each record's last change among
        them is sent with the snapshot's value, which is exactly its value at that change;
        earlier changes of the same record are folded into it. From there on records
        are rebuilt from the deltas as usual."""
        listed = list(changes)
        last = {c.key: c.revision for c in listed if c.kind == "call"}
        values = snapshot.entries.get("call", {})
        self.records = dict(values)
        for change in listed:
            if change.kind != "call":
                event = self.change(change)
            elif last[change.key] != change.revision:
                continue
            elif change.key in values:
                whole = dataclasses.replace(change, op="set", value=values[change.key])
                event = self._upsert(whole)
            else:
                event = self.change(dataclasses.replace(change, op="delete", value=b""))
            if event is not None:
                yield event

    def change(self, change: Change) -> Event | None:
        if change.kind not in self.kinds:
            return None
        if change.op == "update" and self.call_changes:
            event = call_change_event(change)
            if self._show(event):
                return event
        elif change.op != "delete":
            if change.op == "update":
                change = self._rebuilt(change)
            elif change.kind == "call" and self.rebuilds_records:
                self.records[change.key] = change.value
            event = self._upsert(change)
            if self._show(event):
                return event
        elif change.kind == "call":
            self.records.pop(change.key, None)
        ident = (change.kind, change.key)
        if not self._shown.get(ident, self._resumed):
            return None
        self._shown[ident] = False
        return Event(
            type=Event.TYPE_DELETE,
            kind=_KIND_ENUM[change.kind],
            key=change.key,
            name=resource_name(change.kind, change.key),
            revision=change.revision,
            node=change.node,
        )

    def _rebuilt(self, change: Change) -> Change:
        """The ``set`` of the whole record an ``update`` entry leads to."""
        held = self.records.get(change.key)
        record = calls.decode(held) if isinstance(held, bytes) else held
        try:
            delta = json.loads(change.value)
        except ValueError:
            delta = None
        if not isinstance(delta, dict):
            log.warning("skipping a call delta that is not JSON", extra={"id": change.revision})
            delta = {}
        rebuilt = calls.apply_delta(record, delta)
        self.records[change.key] = rebuilt
        return dataclasses.replace(change, op="set", value=rebuilt.to_json().encode())

    def _upsert(self, change: Change) -> Event:
        if self._cache is not None:
            return self._cache.get(change)
        return upsert_event(change.kind, change.key, change.value, change.revision, change.node)

    def _show(self, event: Event) -> bool:
        """Whether the upserted entry matches this watcher (and remember it was shown)."""
        if event.HasField("registration"):
            matches = self.filter.matches_registration(event.registration)
        elif event.HasField("call_change"):
            matches = self.filter.matches_calls(events_pb2.ExtensionCalls(key=event.key))
        else:
            matches = self.filter.matches_calls(event.extension_calls)
        if matches:
            self._shown[(_KIND_OF[event.kind], event.key)] = True
        return matches


def call_change_event(change: Change) -> Event:
    """The ``TYPE_UPSERT`` event carrying one ``update`` delta as a ``CallChange``."""
    try:
        delta = json.loads(change.value)
    except ValueError:
        delta = None
    if not isinstance(delta, dict):
        delta = {}
    fields = delta.get("call")
    current = str(delta.get("current", ""))
    event = Event(
        type=Event.TYPE_UPSERT,
        kind=_KIND_ENUM["call"],
        key=change.key,
        name=resource_name("call", change.key),
        revision=change.revision,
        node=change.node,
    )
    event.call_change.username = str(delta.get("username", ""))
    event.call_change.current = current
    event.call_change.notify = str(delta.get("notify", ""))
    event.call_change.call.uuid = current
    event.call_change.call.active = bool(delta.get("active"))
    if isinstance(fields, dict):
        event.call_change.call.fields.update({str(n): str(v) for n, v in fields.items()})
    return event


def upsert_event(kind: Kind, key: str, value: bytes, revision: str, node: str) -> Event:
    """The ``TYPE_UPSERT`` event carrying one stored value."""
    event = Event(
        type=Event.TYPE_UPSERT,
        kind=_KIND_ENUM[kind],
        key=key,
        name=resource_name(kind, key),
        revision=revision,
        node=node,
    )
    if kind == "registration":
        event.registration.CopyFrom(registration_message(key, value))
    else:
        event.extension_calls.CopyFrom(extension_calls_message(key, value))
    return event


class UpsertCache:
    """Upsert events of recent changes, shared by every watcher of one server.

    Watchers read the same changes at about the same time; converting a change's JSON
    into a message is most of a watcher's work, so it is done once per change and the
    (then read-only) event is shared. Bounded: the oldest entries are dropped.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._events: OrderedDict[tuple[str, Kind, str], Event] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, change: Change) -> Event:
        ident = (change.revision, change.kind, change.key)
        with self._lock:
            event = self._events.get(ident)
        if event is not None:
            return event
        event = upsert_event(change.kind, change.key, change.value, change.revision, change.node)
        with self._lock:
            self._events[ident] = event
            while len(self._events) > self._size:
                self._events.popitem(last=False)
        return event


def batches(
    events: Iterable[Event],
    max_events: int = MAX_BATCH_EVENTS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[events_pb2.WatchResponse]:
    """Consecutive events packed into responses of at most ``max_events`` events and about
    ``max_bytes`` (a single larger event still goes, alone)."""
    batch: list[Event] = []
    size = 0
    for event in events:
        event_size = event.ByteSize()
        if batch and (len(batch) == max_events or size + event_size > max_bytes):
            yield events_pb2.WatchResponse(events=batch)
            batch, size = [], 0
        batch.append(event)
        size += event_size
    if batch:
        yield events_pb2.WatchResponse(events=batch)
