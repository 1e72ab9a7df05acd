"""Redis I/O of the event state: load what a batch touches, write its changes atomically.

One :meth:`StateStore.apply` = WATCH the keys it reads (+ the node's lease), read the
fields the batch needs, fold the batch (:mod:`event_service.state`, pure), then one
MULTI/EXEC with every HSET/HDEL, PUBLISH, LPUSH+LTRIM and XADD. Another replica or node
writing the same keys in between makes EXEC fail and the batch is re-read and re-folded;
a lost lease raises :class:`LeaseLost` and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis
import redis.cluster
from redis.typing import EncodableT, FieldT

from cti import redis_keys
from cti.config import EventSettings
from cti.redis_client import publish_in_transaction
from event_service import calls, metrics, registrations
from event_service.lease import Lease
from event_service.state import (
    ChannelRef,
    IndexWrite,
    Operation,
    Rules,
    StateChange,
    StateView,
    call_fields,
    needs,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 20


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
        )
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
        for _ in range(MAX_ATTEMPTS):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watched)  # type: ignore[no-untyped-call]
                    view = self._load(pipe, operations)
                    for op in operations:
                        view.apply(op)
                    if not view.changes:
                        return 0
                    pipe.multi()
                    list_pushes = self._queue(pipe, view.changes)
                    if self.lease is not None:
                        pipe.set(self.lease.key, self.lease.owner, px=self.lease.ttl_ms)
                    results = pipe.execute()
                except redis.WatchError:
                    metrics.WRITE_CONFLICTS.labels(self.node).inc()
                    continue
            self._count_dropped(list_pushes, results)
            return view.state_changes
        raise RuntimeError(f"gave up writing after {MAX_ATTEMPTS} conflicting attempts")

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
        if record_fields:
            raw = pipe.hmget(self.call_hash, record_fields)
            records = {f: calls.decode(v) for f, v in zip(record_fields, raw, strict=True)}
        return StateView(self.rules, devices, records, refs)

    def _queue(
        self, pipe: redis.client.Pipeline, changes: Sequence[StateChange | IndexWrite]
    ) -> list[tuple[int, str, int]]:
        """Queue the commands; returns (result index, list, max) of each LPUSH.

        Every change is logged (XADD) and published/listed in order; the hash writes are
        coalesced to the last value per field (one HSET/HDEL per key): inside one
        MULTI/EXEC nobody can see the intermediate values anyway."""
        pushes: list[tuple[int, str, int]] = []
        finals: dict[str, dict[str, str | None]] = {}
        position = 0  # index of the next command's result in EXEC's reply
        for change in changes:
            if isinstance(change, IndexWrite):
                key = self.devices_key if change.index == "devices" else self.channels_key
                finals.setdefault(key, {})[change.field] = change.value
                continue
            target = (
                self.settings.registration if change.kind == "registration" else self.settings.call
            )
            finals.setdefault(target.hash, {})[change.field] = change.value
            if target.channel:
                publish_in_transaction(pipe, target.channel, change.payload, self.registration_hash)
                position += 1
            if target.list:
                pipe.lpush(target.list, change.payload)
                pushes.append((position, target.list, target.list_max))
                pipe.ltrim(target.list, 0, target.list_max - 1)
                position += 2
            pipe.xadd(
                self.log_stream,
                {
                    "kind": change.kind,
                    "op": "delete" if change.value is None else "set",
                    "key": change.field,
                    "value": change.value or "",
                    "node": self.node,
                },
                maxlen=redis_keys.EVENTS_LOG_MAXLEN,
                approximate=True,
            )
            position += 1
        for key, fields in finals.items():
            sets: dict[FieldT, EncodableT] = {f: v for f, v in fields.items() if v is not None}
            deletes = [f for f, v in fields.items() if v is None]
            if sets:
                pipe.hset(key, mapping=sets)
            if deletes:
                pipe.hdel(key, *deletes)
        return pushes

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
