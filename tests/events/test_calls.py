"""Call record transitions (pure), checked against the seed's shape with captured frames."""

from __future__ import annotations

import json

from event_service import calls
from event_service.events import ChannelEvent, classify
from event_service.state import ChannelGone, ChannelRef, Rules, StateChange, StateView
from tests.events.helpers import A_LEG, B_LEG, SEED_FIELDS, captured
from tests.support import SEED_DIR

NODE = "127.0.0.1:8021"


def channel(index: int) -> ChannelEvent:
    event = classify(captured()[index])
    assert isinstance(event, ChannelEvent)
    return event


def view() -> StateView:
    return StateView(Rules(NODE, fields=SEED_FIELDS), {}, {}, {})


def records(state: StateView) -> dict[str, object]:
    return {key: json.loads(record.to_json()) for key, record in state.records.items() if record}


def test_seed_record_shape_and_key_order() -> None:
    seed_text = (SEED_DIR / "call-value.json").read_text()
    seed = calls.decode(seed_text)
    assert seed is not None
    assert json.loads(seed.to_json()) == json.loads(seed_text)
    assert list(json.loads(seed.to_json())) == list(json.loads(seed_text))


def test_a_call_between_two_extensions_updates_both_records() -> None:
    state = view()
    state.apply(channel(2))  # A-leg create
    state.apply(channel(3))  # B-leg create
    assert records(state) == {
        "1000": {
            "username": "1000",
            "current": A_LEG,
            "notify": "callout",
            A_LEG: {
                "Caller-Destination-Number": "1001",
                "Caller-Caller-ID-Number": "1000",
                "Caller-Callee-ID-Number": "",
                "Caller-Profile-Created-Time": "1795675311770713",
                "Caller-Channel-Answered-Time": "0",
            },
            "activity": [A_LEG],
        },
        "1001": {
            "username": "1001",
            "current": B_LEG,
            "notify": "callin",
            B_LEG: {
                "Caller-Destination-Number": "1001",
                "Caller-Caller-ID-Number": "1000",
                "Caller-Callee-ID-Number": "1001",
                "Caller-Profile-Created-Time": "1795675311790594",
                "Caller-Channel-Answered-Time": "0",
            },
            "activity": [B_LEG],
        },
    }


def test_answer_fills_the_answered_time() -> None:
    state = view()
    for index in (2, 3, 4, 5):
        state.apply(channel(index))
    record = records(state)["1000"]
    assert isinstance(record, dict)
    assert record["notify"] == "answer"
    assert record[A_LEG]["Caller-Channel-Answered-Time"] == "1795675311790594"
    assert record["activity"] == [A_LEG]


def test_hangup_leaves_activity_and_keeps_the_current_uuid_object() -> None:
    state = view()
    for index in range(2, 8):
        state.apply(channel(index))
    assert records(state)["1001"] == {
        "username": "1001",
        "current": B_LEG,
        "notify": "hangup",
        B_LEG: {
            "Caller-Destination-Number": "1001",
            "Caller-Caller-ID-Number": "1000",
            "Caller-Callee-ID-Number": "1001",
            "Caller-Profile-Created-Time": "1795675311790594",
            "Caller-Channel-Answered-Time": "1795675311790594",
        },
        "activity": [],
    }
    assert state.channels == {A_LEG: None, B_LEG: None}


def test_hung_up_uuid_object_goes_once_it_is_no_longer_current() -> None:
    state = view()
    for index in (2, 6):  # 1000 calls, its A-leg hangs up
        state.apply(channel(index))
    second = dict(captured()[2])
    second["Unique-ID"] = "second-call"
    event = classify(second)
    assert isinstance(event, ChannelEvent)
    state.apply(event)
    record = records(state)["1000"]
    assert isinstance(record, dict)
    assert record["current"] == "second-call" and record["notify"] == "callout"
    assert A_LEG not in record and record["activity"] == ["second-call"]


def test_every_state_change_is_published_with_the_hash_value() -> None:
    state = view()
    for index in range(2, 8):
        state.apply(channel(index))
    published = [c for c in state.changes if isinstance(c, StateChange)]
    assert [(c.field, json.loads(c.payload)["notify"]) for c in published] == [
        ("1000", "callout"),
        ("1001", "callin"),
        ("1001", "answer"),
        ("1000", "answer"),
        ("1000", "hangup"),
        ("1001", "hangup"),
    ]
    assert all(c.payload == c.value for c in published)


def test_hangup_of_an_unknown_call_changes_nothing() -> None:
    state = view()
    state.apply(channel(6))
    assert state.changes == []


def test_events_without_variables_follow_the_channel_index() -> None:
    state = view()
    state.apply(channel(3))
    bare = {k: v for k, v in captured()[4].items() if not k.startswith("variable_")}
    bare["Channel-Presence-ID"] = ""
    event = classify(bare)
    assert isinstance(event, ChannelEvent) and event.owner is None
    state.apply(event)
    record = records(state)["1001"]
    assert isinstance(record, dict) and record["notify"] == "answer"


def test_reconcile_gone_marks_hangup() -> None:
    state = view()
    state.apply(channel(2))
    state.apply(ChannelGone(A_LEG))
    record = records(state)["1000"]
    assert isinstance(record, dict)
    assert record["notify"] == "hangup" and record["activity"] == []
    assert state.channels[A_LEG] is None


def test_channel_ref_roundtrip_and_damage() -> None:
    ref = ChannelRef(NODE, "1000", "1000", True)
    assert ChannelRef.from_json(ref.to_json()) == ref
    assert ChannelRef.from_json(b"{") is None
    assert calls.decode(b"[]") is None
