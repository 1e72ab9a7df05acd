"""Folding events over the loaded state into the Redis changes they cause (pure).

The store loads, for one batch of events, exactly the hash fields the batch touches
(:func:`needs`), a :class:`StateView` folds the events over them in order and records
:class:`StateChange` (a ``registrations`` field the GUI sees; each one is also published,
listed and logged), :class:`CallUpdate` (a ``calls`` field: logged as a constant-size
delta, the record itself encoded once per batch) and :class:`IndexWrite` (derived
bookkeeping). The store
then writes all of them in one MULTI/EXEC, so no reader ever sees half a change.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, assert_never

from event_service.ingest import calls, registrations
from event_service.ingest.events import ChannelEvent, Owner, RegistrationEvent

Kind = Literal["registration", "call"]


@dataclass(frozen=True)
class StateChange:
    kind: Kind
    field: str
    value: str | None
    """The field's new JSON; ``None`` = HDEL."""
    payload: str
    """What the pub/sub channel and the list carry (the new value, or the removal event)."""


@dataclass(frozen=True)
class CallUpdate:
    """A ``calls`` field changed. The change log carries ``delta`` (what changed: constant
    size however many calls the extension has); the hash gets the record's final value,
    encoded once per batch by the store."""

    field: str
    delta: str
    whole: str | None = None
    """The whole new value when the log must carry it instead of the delta (the stored
    record was not one a delta can follow: damaged, or written by hand)."""
    payload: str | None = None
    """The whole new value for the configured channel/list (``None`` when neither is)."""


@dataclass(frozen=True)
class IndexWrite:
    index: Literal["devices", "channels"]
    field: str
    value: str | None


@dataclass(frozen=True)
class ChannelRef:
    """Where a live channel is: its node and the ``calls`` field it belongs to."""

    node: str
    key: str
    username: str
    answered: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "node": self.node,
                "key": self.key,
                "username": self.username,
                "answered": self.answered,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> ChannelRef | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(
                str(data["node"]), str(data["key"]), str(data["username"]), bool(data["answered"])
            )
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class DeviceSync:
    """Reconcile's verdict for one extension on one node: devices to drop / to add."""

    field: str
    remove: tuple[str, ...] = ()
    # (``dataclasses.field``: the attribute above shadows ``field`` in this class body)
    add: Mapping[str, registrations.Device] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ChannelGone:
    """Reconcile: FreeSWITCH no longer has this channel."""

    uuid: str


@dataclass(frozen=True)
class StaleRegistration:
    """Reconcile: a ``registrations`` entry no node holds a device for (written by hand, or
    left from lost bookkeeping): nothing in FreeSWITCH backs it."""

    field: str


@dataclass(frozen=True)
class StaleCall:
    """Reconcile: a uuid in a record's ``activity`` that no node has as a live channel."""

    key: str
    uuid: str


Operation = (
    RegistrationEvent | ChannelEvent | DeviceSync | ChannelGone | StaleRegistration | StaleCall
)


@dataclass(frozen=True)
class Rules:
    """What the transitions need from the settings."""

    node: str
    key_with_domain: bool = False
    fields: tuple[str, ...] = ()
    modes: Mapping[str, str] = field(default_factory=dict)
    publish_calls: bool = False
    """A channel or list wants every new ``calls`` value whole (O(live calls) per change)."""

    def mode(self, profile: str) -> str:
        return self.modes.get(profile, "false")


@dataclass(frozen=True)
class Needs:
    devices: frozenset[str]
    channels: frozenset[str]


def needs(operations: Iterable[Operation], rules: Rules) -> Needs:
    """The devices fields and channel uuids a batch reads first (calls fields come from
    the channel refs, see :func:`call_fields`)."""
    devices, channels = set(), set()
    for op in operations:
        match op:
            case RegistrationEvent(owner=owner):
                devices.add(owner.key(rules.key_with_domain))
            case DeviceSync(field=name) | StaleRegistration(field=name):
                devices.add(name)
            case ChannelEvent(uuid=uuid) | ChannelGone(uuid=uuid) | StaleCall(uuid=uuid):
                channels.add(uuid)
    return Needs(frozenset(devices), frozenset(channels))


def call_fields(
    operations: Iterable[Operation], refs: Mapping[str, ChannelRef | None], rules: Rules
) -> set[str]:
    keys = set()
    for op in operations:
        match op:
            case StaleCall(key=key):
                keys.add(key)
            case ChannelEvent(uuid=uuid) | ChannelGone(uuid=uuid) if (
                ref := refs.get(uuid)
            ) is not None:
                keys.add(ref.key)
            case ChannelEvent(owner=Owner() as owner):  # a new channel: its owner's field
                keys.add(owner.key(rules.key_with_domain))
    return keys


@dataclass
class StateView:
    rules: Rules
    devices: dict[str, dict[str, registrations.Device]]
    records: dict[str, calls.CallRecord | None]
    channels: dict[str, ChannelRef | None]
    changes: list[StateChange | CallUpdate | IndexWrite] = field(default_factory=list)
    state_changes: int = 0
    rewrites: set[str] = field(default_factory=set)
    """``calls`` fields whose stored value a delta cannot follow: logged whole once."""

    def apply(self, op: Operation) -> None:
        """The one dispatch from an operation to its transition."""
        match op:
            case RegistrationEvent():
                self._registration(op)
            case DeviceSync():
                self._device_sync(op)
            case ChannelEvent():
                self._channel(op)
            case ChannelGone():
                self._gone(op)
            case StaleRegistration():
                self._stale_registration(op)
            case StaleCall():
                self._stale_call(op)
            case _:
                assert_never(op)

    # -- registrations ------------------------------------------------------------------

    def _registration(self, event: RegistrationEvent) -> None:
        key = event.owner.key(self.rules.key_with_domain)
        before = self.devices.get(key, {})
        after = registrations.apply_event(
            before, event, self.rules.node, self.rules.mode(event.profile)
        )
        if event.action != "register" and after == before:
            return  # a device we never had (or already dropped): nothing changes
        self._set_devices(key, before, dict(after), event)

    def _device_sync(self, sync: DeviceSync) -> None:
        before = self.devices.get(sync.field, {})
        after = {i: d for i, d in before.items() if i not in sync.remove}
        after.update(sync.add)
        if after != before:
            self._set_devices(sync.field, before, after, None)

    def _set_devices(
        self,
        key: str,
        before: Mapping[str, registrations.Device],
        after: dict[str, registrations.Device],
        event: RegistrationEvent | None,
    ) -> None:
        self.devices[key] = after
        self.changes.append(
            IndexWrite("devices", key, registrations.encode(after) if after else None)
        )
        value = registrations.hash_value(after)
        if value is None:
            gone = registrations.latest(before)
            payload = registrations.removal_payload(event, gone, key)
        elif registrations.hash_value(before) == value:
            return  # another device left; the one shown is unchanged
        else:
            payload = value
        self._change("registration", key, value, payload)

    def _stale_registration(self, op: StaleRegistration) -> None:
        if self.devices.get(op.field):
            return  # a device arrived meanwhile: it is backed after all
        payload = registrations.removal_payload(None, None, op.field)
        self._change("registration", op.field, None, payload)

    # -- calls --------------------------------------------------------------------------

    def _channel(self, event: ChannelEvent) -> None:
        ref = self.channels.get(event.uuid)
        if ref is None:
            if event.owner is None:
                return  # not an extension's leg
            ref = ChannelRef(
                self.rules.node, event.owner.key(self.rules.key_with_domain), event.owner.user
            )
        record = calls.apply_event(
            self.records.get(ref.key), ref.username, event, self.rules.fields
        )
        if record is None:
            return
        if event.action == "hangup":
            self.channels[event.uuid] = None
            self.changes.append(IndexWrite("channels", event.uuid, None))
        else:
            ref = ChannelRef(
                ref.node, ref.key, ref.username, ref.answered or event.notify == "answer"
            )
            if self.channels.get(event.uuid) != ref:
                self.channels[event.uuid] = ref
                self.changes.append(IndexWrite("channels", event.uuid, ref.to_json()))
        self._set_record(ref.key, record)

    def _gone(self, op: ChannelGone) -> None:
        ref = self.channels.get(op.uuid)
        if ref is None:
            return
        self.channels[op.uuid] = None
        self.changes.append(IndexWrite("channels", op.uuid, None))
        record = calls.apply_gone(self.records.get(ref.key), op.uuid)
        if record is not None:
            self._set_record(ref.key, record)

    def _stale_call(self, op: StaleCall) -> None:
        if self.channels.get(op.uuid) is not None:
            return  # live after all
        record = calls.apply_gone(self.records.get(op.key), op.uuid)
        if record is not None:
            self._set_record(op.key, record)

    def _set_record(self, key: str, record: calls.CallRecord) -> None:
        self.records[key] = record
        whole = None
        if key in self.rewrites:
            self.rewrites.discard(key)
            whole = record.to_json()
        payload = (whole or record.to_json()) if self.rules.publish_calls else None
        self.changes.append(CallUpdate(key, record.delta(), whole, payload))
        self.state_changes += 1

    def _change(self, kind: Kind, key: str, value: str | None, payload: str) -> None:
        self.changes.append(StateChange(kind, key, value, payload))
        self.state_changes += 1
