"""Watch = one consistent snapshot of the state hashes, then the change log from exactly
that point (:mod:`event_service.api.change_log`): no gap, no duplicate.

:class:`WatchView` (pure) turns snapshot entries and changes into ``WatchEvent``
events for one watcher's kinds and filter; :func:`batches` packs them into stream
messages (gRPC costs ~100 µs per message in Python, so one event per message would cap a
stream at ~10,000 events/s).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from cti.v1 import events_pb2
from event_service.api.change_log import ALL_KINDS, Change, Snapshot
from event_service.api.messages import (
    Kind,
    StateFilter,
    extension_calls_message,
    registration_message,
    resource_name,
)
from event_service.ingest import calls

log = logging.getLogger(__name__)

Event = events_pb2.WatchEvent
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 1 << 20
"""A stream message carries at most this much (clients accept 4 MiB by default)."""
_KIND_ENUM: dict[Kind, events_pb2.WatchKind.ValueType] = {
    "registration": events_pb2.WATCH_KIND_REGISTRATIONS,
    "call": events_pb2.WATCH_KIND_EXTENSION_CALLS,
}
_KIND_OF: dict[int, Kind] = {number: kind for kind, number in _KIND_ENUM.items()}


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
