"""Call record transitions (pure), checked against the seed's shape with captured frames."""

from __future__ import annotations

import json

from event_service.ingest import calls
from event_service.ingest.events import ChannelEvent, classify
from event_service.ingest.state import CallUpdate, ChannelGone, ChannelRef, Rules, StateView
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
    state = StateView(Rules(NODE, fields=SEED_FIELDS, publish_calls=True), {}, {}, {})
    for index in range(2, 8):
        state.apply(channel(index))
    published = [c for c in state.changes if isinstance(c, CallUpdate)]
    assert [(c.field, json.loads(c.payload or "")["notify"]) for c in published] == [
        ("1000", "callout"),
        ("1001", "callin"),
        ("1001", "answer"),
        ("1000", "answer"),
        ("1000", "hangup"),
        ("1001", "hangup"),
    ]
    assert published[-1].payload == records_json(state)["1001"]


def test_without_a_channel_or_list_no_whole_value_is_built_per_change() -> None:
    state = view()
    for index in range(2, 8):
        state.apply(channel(index))
    updates = [c for c in state.changes if isinstance(c, CallUpdate)]
    assert len(updates) == 6
    assert all(c.payload is None and c.whole is None for c in updates)


def records_json(state: StateView) -> dict[str, str]:
    return {key: record.to_json() for key, record in state.records.items() if record}


def test_deltas_replay_to_the_stored_record_byte_for_byte() -> None:
    """What a Watch client does with ``update`` entries gives exactly the stored value,
    also from a record written by hand with objects that are neither current nor live."""
    hand_written = json.dumps(
        {
            "username": "1000",
            "current": "old",
            "notify": "answer",
            "stray": {"Caller-Destination-Number": "9"},
            "old": {},
            "live": {},
            "activity": ["live", "old"],
        }
    )
    start = calls.decode(hand_written)
    state = StateView(Rules(NODE, fields=SEED_FIELDS), {}, {"1000": start}, {})
    replayed: dict[str, calls.CallRecord | None] = {"1000": calls.decode(hand_written)}
    second = dict(captured()[2], **{"Unique-ID": "second"})
    events = [channel(2), classify(second), channel(5), channel(3), channel(6)]
    for event in [*events, ChannelGone(A_LEG)]:
        assert isinstance(event, ChannelEvent | ChannelGone)
        state.apply(event)
    for change in state.changes:
        if isinstance(change, CallUpdate):
            replayed[change.field] = calls.apply_delta(
                replayed.get(change.field), json.loads(change.delta)
            )
    assert {k: r.to_json() for k, r in replayed.items() if r} == records_json(state)
    final = json.loads(records_json(state)["1000"])
    assert final["activity"] == ["live", "old", "second"] and "stray" not in final


def test_an_events_cost_and_delta_do_not_grow_with_live_calls() -> None:
    """The delta names one call; the record joins encoded fragments and is unchanged
    whatever the event."""
    sizes = []
    for live in (10, 500):
        record = calls.CallRecord("1000")
        for number in range(live):
            fields = {"Caller-Destination-Number": str(number)}
            record._change(f"{number:036d}", "answer", fields, live=True)
        event = channel(2)
        after = calls.apply_event(record, "1000", event, SEED_FIELDS)
        assert after is record
        sizes.append(len(record.delta()))
        assert json.loads(record.to_json())["activity"][-1] == A_LEG
        assert len(json.loads(record.to_json())["activity"]) == live + 1
    assert sizes[0] == sizes[1]


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
