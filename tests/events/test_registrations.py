"""Registration transitions (pure): seed shape, multi-device modes, removal payloads."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from event_service.ingest import registrations
from event_service.ingest.events import Owner, RegistrationEvent, classify
from event_service.ingest.state import IndexWrite, Rules, StateChange, StateView
from tests.events.helpers import captured

NODE = "127.0.0.1:8021"


def reg(index: int, **headers: str) -> RegistrationEvent:
    data = captured()[index]
    data.update(headers)
    event = classify(data)
    assert isinstance(event, RegistrationEvent)
    return event


def fold(events: list[RegistrationEvent], mode: str = "false") -> StateView:
    view = StateView(Rules(NODE, modes={"internal": mode}), {}, {}, {})
    for event in events:
        view.apply(event)
    return view


def hash_changes(view: StateView) -> list[tuple[str, str | None]]:
    return [(c.field, c.value) for c in view.changes if isinstance(c, StateChange)]


def test_register_stores_the_events_headers_as_one_flat_json_object() -> None:
    view = fold([reg(0)])
    ((field, value),) = hash_changes(view)
    assert field == "1000"
    assert value is not None
    assert json.loads(value) == captured()[0]
    assert json.loads(value)["contact"] == '"" <sip:1000@127.0.0.1:5071;transport=UDP>'


def test_captured_sequence_ends_with_nobody_registered() -> None:
    view = fold([reg(0), reg(1), reg(8), reg(9), reg(10)])
    deleted = [(f, v is None) for f, v in hash_changes(view)]
    assert deleted == [
        ("1000", False),
        ("1001", False),
        ("1000", True),
        ("1001", False),
        ("1001", True),
    ]
    assert view.devices == {"1000": {}, "1001": {}}


def test_unregister_publishes_the_unregister_event() -> None:
    view = fold([reg(0), reg(8)])
    removal = [c for c in view.changes if isinstance(c, StateChange)][-1]
    assert removal.value is None
    assert json.loads(removal.payload)["Event-Subclass"] == "sofia::unregister"


def test_default_mode_a_new_call_id_replaces_no_phantom() -> None:
    # 010 re-registers 1001 with a new call-id; 011 expires that one.
    view = fold([reg(1), reg(9), reg(10)])
    assert view.devices["1001"] == {}
    assert hash_changes(view)[-1] == ("1001", None)


def test_per_call_id_mode_keeps_the_other_device() -> None:
    # multiple-registrations=true: 002 and 010 are two devices; 011 expires only 010's.
    view = fold([reg(1), reg(9), reg(10)], mode="true")
    (device,) = view.devices["1001"].values()
    assert device.value["call-id"] == "1-3370@127.0.0.1"
    last_field, last_value = hash_changes(view)[-1]
    assert last_field == "1001" and last_value is not None
    assert json.loads(last_value)["call-id"] == "1-3370@127.0.0.1"


def test_contact_mode_one_device_per_contact() -> None:
    phone = reg(1)
    softphone = reg(1, contact='"" <sip:1001@10.0.0.9:5062>', **{"call-id": "other"})
    softphone = replace(softphone, timestamp=phone.timestamp + 1)
    view = fold([phone, softphone], mode="contact")
    assert len(view.devices["1001"]) == 2
    # the phone unregisters (by contact, with yet another call-id): the softphone stays
    leaving = reg(8, **{"from-user": "1001", "contact": phone.contact, "call-id": "zzz"})
    view.apply(leaving)
    (left,) = view.devices["1001"].values()
    assert left.value["call-id"] == "other"


def test_hash_keeps_the_latest_device_and_a_leaving_older_one_changes_nothing_shown() -> None:
    older = reg(1, **{"call-id": "a"})
    newer = replace(reg(1, **{"call-id": "b"}), timestamp=older.timestamp + 10)
    view = fold([older, newer], mode="true")
    shown = hash_changes(view)[-1][1]
    assert shown is not None and json.loads(shown)["call-id"] == "b"
    before = len(hash_changes(view))
    view.apply(reg(10, **{"call-id": "a"}))  # expire of the older device
    assert len(hash_changes(view)) == before  # hash unchanged, nothing published
    assert [c for c in view.changes if isinstance(c, IndexWrite)][-1].field == "1001"


def test_unknown_device_removal_writes_nothing() -> None:
    view = fold([reg(8)])
    assert view.changes == []


def test_key_with_domain() -> None:
    view = StateView(Rules(NODE, key_with_domain=True), {}, {}, {})
    view.apply(reg(0))
    assert hash_changes(view)[0][0] == "1000@127.0.0.1"


def test_two_nodes_hold_separate_devices() -> None:
    devices = registrations.apply_event({}, reg(0), "a:8021", "false")
    devices = registrations.apply_event(devices, reg(0), "b:8021", "false")
    assert len(devices) == 2
    devices = registrations.apply_event(devices, reg(8), "a:8021", "false")
    assert [d.node for d in devices.values()] == ["b:8021"]


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"[1]", b'{"x": {"node": 1}}'])
def test_damaged_device_records_read_as_empty(raw: bytes | None) -> None:
    assert registrations.decode(raw) == {}


def test_stale_entry_is_removed_unless_a_device_backs_it() -> None:
    from event_service.ingest.state import StaleRegistration

    view = fold([reg(0)])
    before = len(view.changes)
    view.apply(StaleRegistration("1000"))  # backed by the device just registered
    assert len(view.changes) == before
    view.apply(StaleRegistration("1002"))
    removal = view.changes[-1]
    assert isinstance(removal, StateChange) and removal.value is None
    assert json.loads(removal.payload) == {
        "cti-key": "1002",
        "Event-Name": "CUSTOM",
        "Event-Subclass": "sofia::expire",
        "cti-reason": "reconcile",
    }


@pytest.mark.parametrize("mode", ["false", "contact", "true"])
def test_devices_of_one_extension_match_its_whole_user_and_domain(mode: str) -> None:
    """A plain-extension key holds every domain's devices of that extension: the ones of
    1000@a.example are not those of 1000@a.example.org (a prefix of the id is no match)."""
    node = "10.0.0.1:8021"
    mine = registrations.device_id(
        mode, node, "internal", Owner("1000", "a.example"), "sip:c", "id1"
    )
    other = registrations.device_id(
        mode, node, "internal", Owner("1000", "a.example.org"), "sip:c", "id2"
    )
    device = registrations.Device(node=node, at=1, value={})
    devices = {mine: device, other: device}
    assert list(registrations.devices_of(devices, "1000", "A.example")) == [mine]
