"""Redis I/O of the event state: load what a batch touches, write its changes atomically.

One :meth:`StateStore.apply` = WATCH the keys it reads (+ the node's lease), read the
fields the batch needs, fold the batch (:mod:`event_service.ingest.state`, pure), then one
MULTI/EXEC with every HSET/HDEL, PUBLISH, LPUSH+LTRIM and XADD. Another replica or node
writing the same keys in between makes EXEC fail and the batch is re-read and re-folded;
a lease another replica holds raises :class:`LeaseLost` and writes nothing.

Cost per event: a ``calls`` record read back with the very bytes this store wrote last is
taken from :class:`RecordCache` (no JSON decode), the fold changes one call in it, the
record is encoded once per batch (fragments joined) and the change log gets a delta per
change (constant size). The log is bounded in entries and, approximately, in bytes
(:func:`log_maxlen`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import redis
import redis.cluster
from redis.typing import EncodableT, FieldT

from cti import redis_keys
from cti.config import EventSettings, PublishTarget
from cti.redis_client import publish_in_transaction
from cti.transactions import watch_transaction
from event_service import metrics
from event_service.ingest import calls, registrations
from event_service.ingest.lease import Lease
from event_service.ingest.state import (
    CallUpdate,
    ChannelRef,
    IndexWrite,
    Operation,
    Rules,
    StateView,
    call_fields,
    needs,
)

log = logging.getLogger(__name__)

_Written = tuple[StateView, list[tuple[int, str, int]], dict[str, str], list[object]]
"""What one committed write leaves to account for: the view, its list pushes, the
``calls`` values written and the transaction's results."""


def log_maxlen(average_entry_bytes: float) -> int:
    """The change log's ``MAXLEN``: at most :data:`~cti.redis_keys.EVENTS_LOG_MAXLEN`
    entries and, at the entries' average size, about
    :data:`~cti.redis_keys.EVENTS_LOG_MAX_BYTES` bytes."""
    by_bytes = int(redis_keys.EVENTS_LOG_MAX_BYTES / max(average_entry_bytes, 1.0))
    return max(1000, min(redis_keys.EVENTS_LOG_MAXLEN, by_bytes))


class RecordCache:
    """The ``calls`` records this store wrote last, with the exact bytes written (LRU).

    A batch that reads a field back with those very bytes reuses the record instead of
    decoding the JSON; anything else (another node's or replica's write, a hand edit) is
    decoded afresh. The fold always gets a copy: a batch that fails leaves this intact."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[bytes, calls.CallRecord]] = OrderedDict()

    def load(self, field: str, raw: bytes | str | None) -> tuple[calls.CallRecord | None, bool]:
        """(record, whether a delta can follow it: it encodes back to the stored bytes)."""
        if raw is None:
            return None, True
        data = raw.encode() if isinstance(raw, str) else raw
        hit = self._entries.get(field)
        if hit is not None and hit[0] == data:
            self._entries.move_to_end(field)
            return hit[1].copy(), True
        record = calls.decode(data)
        return record, record is not None and record.to_json().encode() == data

    def remember(self, field: str, value: str, record: calls.CallRecord) -> None:
        self._entries[field] = (value.encode(), record)
        self._entries.move_to_end(field)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class LeaseLost(Exception):
    """Another replica owns this node now; stop consuming it."""

    def __init__(self, node: str, holder: str = "") -> None:
        super().__init__(f"lease of {node} held by {holder or 'another replica'}")
        self.node = node
        self.holder = holder


@dataclass(frozen=True)
class NodeSnapshot:
    """What Redis says one node holds (for reconcile)."""

    devices: dict[str, dict[str, registrations.Device]]
    """registration field -> this node's devices (device id -> device)."""
    channels: dict[str, ChannelRef]
    """uuid -> ref, this node's live channels only."""
    stale_registrations: list[str]
    """``registrations`` fields no node holds a device for."""
    stale_calls: list[tuple[str, str]]
    """(calls field, uuid) of ``activity`` entries no node has as a live channel."""


class StateStore:
    def __init__(
        self,
        client: redis.Redis,
        settings: EventSettings,
        node: str,
        lease: Lease | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.node = node
        self.lease = lease
        self.rules = Rules(
            node=node,
            key_with_domain=settings.key_with_domain,
            fields=settings.call.fields,
            modes=dict(settings.multiple_registrations),
            publish_calls=bool(settings.call.channel or settings.call.list),
        )
        self.records = RecordCache()
        self._entry_bytes = 512.0
        """Running average size of a change-log entry (for the byte bound)."""
        self.registration_hash = settings.registration.hash
        self.call_hash = settings.call.hash
        self.devices_key = redis_keys.registration_devices(self.registration_hash)
        self.channels_key = redis_keys.call_channels(self.call_hash)
        self.log_stream = redis_keys.events_log(self.registration_hash)

    # -- writing --------------------------------------------------------------------------

    def apply(self, operations: Sequence[Operation]) -> int:
        """Apply a batch; returns how many ``registrations``/``calls`` fields changed."""
        if not operations:
            return 0
        watched = [self.devices_key, self.channels_key, self.call_hash]
        if self.lease is not None:
            watched.append(self.lease.key)

        def write(pipe: redis.client.Pipeline) -> _Written | None:
            view = self._load(pipe, operations)
            for op in operations:
                view.apply(op)
            if not view.changes:
                return None
            pipe.multi()
            list_pushes, written = self._queue(pipe, view)
            if self.lease is not None:
                pipe.set(self.lease.key, self.lease.owner, px=self.lease.ttl_ms)
            return view, list_pushes, written, pipe.execute()

        outcome = watch_transaction(
            self.client,
            watched,
            write,
            name="registrations and calls state",
            on_conflict=metrics.WRITE_CONFLICTS.labels(self.node).inc,
        )
        if outcome is None:
            return 0
        view, list_pushes, written, results = outcome
        for field, value in written.items():
            record = view.records.get(field)
            if record is not None:
                self.records.remember(field, value, record)
        self._count_dropped(list_pushes, results)
        return view.state_changes

    def _load(self, pipe: redis.client.Pipeline, operations: Sequence[Operation]) -> StateView:
        if self.lease is not None:
            # Ours, or lapsed (a stall): the write takes it back (SET in the same
            # MULTI/EXEC; WATCH makes sure nobody took it in between). Only another
            # replica's lease stops us.
            holder: bytes | None = pipe.get(self.lease.key)  # type: ignore[assignment]
            if holder is not None and not self.lease.held_by_us(holder):
                raise LeaseLost(self.node, holder.decode(errors="replace"))
        wanted = needs(operations, self.rules)
        device_fields = sorted(wanted.devices)
        uuids = sorted(wanted.channels)
        devices = {}
        if device_fields:
            raw = pipe.hmget(self.devices_key, device_fields)
            devices = {f: registrations.decode(v) for f, v in zip(device_fields, raw, strict=True)}
        refs: dict[str, ChannelRef | None] = {}
        if uuids:
            raw = pipe.hmget(self.channels_key, uuids)
            refs = {u: ChannelRef.from_json(v) for u, v in zip(uuids, raw, strict=True)}
        record_fields = sorted(call_fields(operations, refs, self.rules))
        records: dict[str, calls.CallRecord | None] = {}
        rewrites: set[str] = set()
        if record_fields:
            raw = pipe.hmget(self.call_hash, record_fields)
            for record_field, value in zip(record_fields, raw, strict=True):
                records[record_field], followable = self.records.load(record_field, value)
                if not followable:
                    rewrites.add(record_field)
        return StateView(self.rules, devices, records, refs, rewrites=rewrites)

    def _queue(
        self, pipe: redis.client.Pipeline, view: StateView
    ) -> tuple[list[tuple[int, str, int]], dict[str, str]]:
        """Queue the commands; returns (result index, list, max) of each LPUSH, and the
        ``calls`` values written.

        Every change is logged (XADD) and published/listed in order; the hash writes are
        coalesced to the last value per field (one HSET/HDEL per key): inside one
        MULTI/EXEC nobody can see the intermediate values anyway. A ``calls`` record is
        encoded here, once per batch, however many of its calls changed."""
        pushes: list[tuple[int, str, int]] = []
        finals: dict[str, dict[str, str | None]] = {}
        written: dict[str, str] = {}
        position = 0  # index of the next command's result in EXEC's reply
        maxlen = log_maxlen(self._entry_bytes)
        for change in view.changes:
            if isinstance(change, IndexWrite):
                key = self.devices_key if change.index == "devices" else self.channels_key
                finals.setdefault(key, {})[change.field] = change.value
                continue
            if isinstance(change, CallUpdate):
                target: PublishTarget = self.settings.call
                written[change.field] = ""  # encoded below, from the final record
                kind, op = "call", "update" if change.whole is None else "set"
                logged = change.delta if change.whole is None else change.whole
                payload = change.payload
            else:
                target = self.settings.registration
                finals.setdefault(target.hash, {})[change.field] = change.value
                kind, op = change.kind, "delete" if change.value is None else "set"
                logged, payload = change.value or "", change.payload
            if payload is not None and target.channel:
                publish_in_transaction(pipe, target.channel, payload, self.registration_hash)
                position += 1
            if payload is not None and target.list:
                pipe.lpush(target.list, payload)
                pushes.append((position, target.list, target.list_max))
                pipe.ltrim(target.list, 0, target.list_max - 1)
                position += 2
            pipe.xadd(
                self.log_stream,
                {"kind": kind, "op": op, "key": change.field, "value": logged, "node": self.node},
                maxlen=maxlen,
                approximate=True,
            )
            self._entry_bytes += (len(logged) + len(change.field) + 48 - self._entry_bytes) / 64
            position += 1
        self._queue_hash_writes(pipe, view, finals, written)
        return pushes, written

    def _queue_hash_writes(
        self,
        pipe: redis.client.Pipeline,
        view: StateView,
        finals: dict[str, dict[str, str | None]],
        written: dict[str, str],
    ) -> None:
        """One HSET/HDEL per key with its fields' last values; each changed ``calls``
        record encoded once (into ``written`` too)."""
        for field in written:
            record = view.records.get(field)
            if record is not None:
                written[field] = record.to_json()
                finals.setdefault(self.call_hash, {})[field] = written[field]
        for key, fields in finals.items():
            sets: dict[FieldT, EncodableT] = {f: v for f, v in fields.items() if v is not None}
            deletes = [f for f, v in fields.items() if v is None]
            if sets:
                pipe.hset(key, mapping=sets)
            if deletes:
                pipe.hdel(key, *deletes)

    def _count_dropped(self, pushes: list[tuple[int, str, int]], results: list[object]) -> None:
        for index, name, limit in pushes:
            length = results[index]
            if isinstance(length, int) and length > limit:
                metrics.LIST_DROPPED.labels(name).inc(length - limit)

    # -- reading for reconcile ------------------------------------------------------------

    def snapshot(self) -> NodeSnapshot:
        devices: dict[str, dict[str, registrations.Device]] = {}
        backed: set[str] = set()
        for raw_key, raw in self.client.hscan_iter(self.devices_key, count=1000):
            key, held = raw_key.decode(), registrations.decode(raw)
            if held:
                backed.add(key)
            mine = {i: d for i, d in held.items() if d.node == self.node}
            if mine:
                devices[key] = mine
        channels: dict[str, ChannelRef] = {}
        live: set[str] = set()
        for raw_uuid, raw in self.client.hscan_iter(self.channels_key, count=1000):
            uuid, ref = raw_uuid.decode(), ChannelRef.from_json(raw)
            if ref is not None:
                live.add(uuid)
                if ref.node == self.node:
                    channels[uuid] = ref
        stale_registrations = []
        for raw_key, _ in self.client.hscan_iter(self.registration_hash, count=1000):
            if raw_key.decode() not in backed:
                stale_registrations.append(raw_key.decode())
        stale_calls: list[tuple[str, str]] = []
        for raw_key, raw in self.client.hscan_iter(self.call_hash, count=1000):
            record = calls.decode(raw)
            if record is not None:
                key = raw_key.decode()
                stale_calls.extend((key, u) for u in record.activity if u not in live)
        return NodeSnapshot(devices, channels, stale_registrations, stale_calls)
