"""Pure parts of the event gRPC API: stored JSON -> messages, filters, page tokens, and
what one watcher is told (no sockets)."""

from __future__ import annotations

import json

import pytest

from cti.api_errors import ApiError
from cti.v1 import events_pb2
from event_service.api.change_log import Change, Snapshot, parse_change, parse_revision
from event_service.api.messages import (
    StateFilter,
    decode_page_token,
    encode_page_token,
    extension_calls_message,
    key_from_name,
    page_size,
    registration_message,
)
from event_service.api.watch import UpsertCache, WatchView, batches
from tests.events.grpc_support import registration, seed_call_record, seed_registration
from tests.support import SEED_DIR

Event = events_pb2.WatchEvent


def test_seed_registration_is_served_faithfully() -> None:
    raw = (SEED_DIR / "registration-value.json").read_bytes()
    message = registration_message("121", raw)
    assert message.name == "registrations/121"
    assert dict(message.headers) == seed_registration()
    assert message.json == raw.decode()
    assert (message.extension, message.domain) == ("121", "192.168.31.57")
    assert message.contact.startswith('"" <sip:121@192.168.31.57:55458')
    assert (message.network_ip, message.network_port) == ("192.168.31.57", "55458")
    assert (message.status, message.expires) == ("Registered(AUTO-NAT-2.0)", 20)
    assert (message.profile_name, message.call_id) == (
        "internal",
        "220551059ccc409e9a42606f4e5c52bf",
    )


def test_domain_comes_from_the_key_when_keyed_by_domain() -> None:
    message = registration_message("1000@b.example", json.dumps(registration("1000", "a.example")))
    assert (message.extension, message.domain) == ("1000", "b.example")


def test_seed_call_record_is_served_faithfully() -> None:
    raw = (SEED_DIR / "call-value.json").read_bytes()
    message = extension_calls_message("121", raw)
    seed = seed_call_record()
    uuid = seed["current"]
    assert message.name == "calls/121"
    assert (message.username, message.current, message.notify) == ("121", uuid, "answer")
    assert list(message.activity) == [uuid]
    assert [(c.uuid, dict(c.fields), c.active) for c in message.calls] == [(uuid, seed[uuid], True)]
    assert message.json == raw.decode()


def test_hung_up_call_is_not_active_and_non_string_values_are_rendered() -> None:
    value = {
        "username": "1000",
        "current": "u1",
        "notify": "hangup",
        "u1": {"Caller-Destination-Number": 1001, "x": True, "y": None},
        "activity": [],
    }
    message = extension_calls_message("1000", json.dumps(value))
    assert [(c.uuid, dict(c.fields), c.active) for c in message.calls] == [
        ("u1", {"Caller-Destination-Number": "1001", "x": "true", "y": ""}, False)
    ]


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_value_that_is_not_an_object_is_served_raw(raw: bytes) -> None:
    registration_msg = registration_message("1000", raw)
    calls_msg = extension_calls_message("1000", raw)
    assert registration_msg.json == calls_msg.json == raw.decode(errors="replace")
    assert not registration_msg.headers and not calls_msg.calls
    assert registration_msg.extension == "1000"


@pytest.mark.parametrize("expires", ["99999999999999999999", "\u0661\u0662", "-5", "20s"])
def test_an_expires_that_is_no_int64_number_is_served_as_0(expires: str) -> None:
    """One odd value (written by hand) must not break Get, List and every Watch snapshot."""
    raw = json.dumps({"from-user": "1000", "expires": expires})
    message = registration_message("1000", raw)
    assert message.expires == 0 and message.headers["expires"] == expires
    assert message.json == raw


@pytest.mark.parametrize("name", ["", "registrations/", "calls/1000", "1000"])
def test_bad_names_are_invalid_arguments(name: str) -> None:
    with pytest.raises(ApiError) as error:
        key_from_name("registration", name)
    assert error.value.violations[0].field == "name"


def test_names_keep_domain_keys_whole() -> None:
    assert key_from_name("call", "calls/1000@example.com") == "1000@example.com"


def test_filters() -> None:
    a = registration_message("1000", json.dumps(registration("1000", "a.example")))
    b = registration_message("2000", json.dumps(registration("2000", "B.example")))
    assert StateFilter(domain="b.example").matches_registration(b)
    assert not StateFilter(domain="b.example").matches_registration(a)
    assert StateFilter(extension_prefix="10").matches_registration(a)
    assert not StateFilter(extension_prefix="10").matches_registration(b)
    live = extension_calls_message("1000@a.example", json.dumps(seed_call_record()))
    ended = extension_calls_message("1001", json.dumps({"username": "1001", "activity": []}))
    assert StateFilter(active_only=True).matches_calls(live)
    assert not StateFilter(active_only=True).matches_calls(ended)
    assert StateFilter(domain="a.example").matches_calls(live)
    assert not StateFilter(domain="a.example").matches_calls(ended)


def test_page_tokens_round_trip_and_are_tied_to_the_filter() -> None:
    state_filter = StateFilter(domain="a.example")
    token = encode_page_token("1000@a.example", state_filter)
    assert decode_page_token(token, state_filter) == "1000@a.example"
    assert decode_page_token("", state_filter) == ""
    for bad_token, other_filter in [
        (token, StateFilter(domain="b.example")),
        ("garbage!", state_filter),
        ("e30", state_filter),  # base64 of "{}"
    ]:
        with pytest.raises(ApiError) as error:
            decode_page_token(bad_token, other_filter)
        assert error.value.violations[0].field == "page_token"


def test_page_size_defaults_and_bounds() -> None:
    assert page_size(0) == 100
    assert page_size(5) == 5
    assert page_size(10**6) == 1000
    with pytest.raises(ApiError):
        page_size(-1)


def test_revisions() -> None:
    assert parse_revision("1700000000000-3") == (1700000000000, 3)
    assert parse_revision("1-10") > parse_revision("1-9")
    for bad in ["", "1", "a-b", "1-2-3", "$", ">"]:
        with pytest.raises(ValueError):
            parse_revision(bad)


def test_change_log_entries_in_the_agreed_format_parse() -> None:
    change = parse_change(
        b"5-1",
        {b"kind": b"call", b"op": b"set", b"key": b"1000", b"value": b"{}", b"node": b"n:1"},
    )
    assert change == Change("5-1", "call", "set", "1000", b"{}", "n:1")
    assert parse_change(b"5-2", {b"kind": b"other", b"op": b"set", b"key": b"1"}) is None
    assert parse_change(b"5-3", {b"kind": b"call", b"op": b"replace", b"key": b"1"}) is None
    assert parse_change(b"5-4", {b"kind": b"call", b"op": b"set"}) is None


def _set(revision: str, key: str, domain: str = "a.example") -> Change:
    value = json.dumps(registration(key, domain)).encode()
    return Change(revision, "registration", "set", key, value, "n:1")


def _delete(revision: str, key: str, kind: str = "registration") -> Change:
    return Change(revision, kind, "delete", key, b"", "n:1")  # type: ignore[arg-type]


def test_view_sends_the_snapshot_sorted_then_the_marker() -> None:
    snapshot = Snapshot(
        "9-0",
        {
            "registration": {
                "1001": json.dumps(registration("1001")).encode(),
                "1000": json.dumps(registration("1000")).encode(),
            },
            "call": {"1000": json.dumps(seed_call_record()).encode()},
        },
    )
    responses = list(WatchView(("registration", "call"), StateFilter(), False).snapshot(snapshot))
    assert [(r.type, r.kind, r.key, r.revision) for r in responses] == [
        (Event.TYPE_SNAPSHOT, events_pb2.WATCH_KIND_REGISTRATIONS, "1000", "9-0"),
        (Event.TYPE_SNAPSHOT, events_pb2.WATCH_KIND_REGISTRATIONS, "1001", "9-0"),
        (Event.TYPE_SNAPSHOT, events_pb2.WATCH_KIND_EXTENSION_CALLS, "1000", "9-0"),
        (Event.TYPE_SNAPSHOT_COMPLETE, events_pb2.WATCH_KIND_UNSPECIFIED, "", "9-0"),
    ]
    assert responses[0].registration.extension == "1000"
    assert responses[2].extension_calls.notify == "answer"


def test_view_deletes_only_what_the_client_holds() -> None:
    view = WatchView(("registration",), StateFilter(domain="a.example"), resumed=False)
    list(view.snapshot(Snapshot("0-0", {"registration": {}})))
    assert view.change(_set("1-0", "1000", "b.example")) is None  # never shown
    assert view.change(_delete("2-0", "1000")) is None
    shown = view.change(_set("3-0", "1000"))
    assert shown is not None and shown.type == Event.TYPE_UPSERT
    assert (shown.registration.domain, shown.node, shown.revision) == ("a.example", "n:1", "3-0")
    moved = view.change(_set("4-0", "1000", "b.example"))  # left the filter
    assert moved is not None and (moved.type, moved.name) == (
        Event.TYPE_DELETE,
        "registrations/1000",
    )
    assert view.change(_delete("5-0", "1000")) is None  # already gone for the client
    assert view.change(_delete("6-0", "1000", kind="call")) is None  # kind not watched


def test_view_after_resume_deletes_unknown_entries_once() -> None:
    view = WatchView(("registration",), StateFilter(domain="a.example"), resumed=True)
    first = view.change(_set("1-0", "1000", "b.example"))
    assert first is not None and first.type == Event.TYPE_DELETE
    assert view.change(_set("2-0", "1000", "b.example")) is None
    gone = view.change(_delete("3-0", "2000"))
    assert gone is not None and gone.type == Event.TYPE_DELETE


def test_batches_keep_order_and_bound_count_and_size() -> None:
    events = [Event(type=Event.TYPE_UPSERT, key=str(n), revision=f"1-{n}") for n in range(7)]
    sized = [len(r.events) for r in batches(events, max_events=3)]
    assert sized == [3, 3, 1]
    assert [e.key for r in batches(events, max_events=3) for e in r.events] == [
        str(n) for n in range(7)
    ]
    one_size = events[0].ByteSize()
    assert [len(r.events) for r in batches(events[:4], max_bytes=2 * one_size)] == [2, 2]
    huge = Event(type=Event.TYPE_UPSERT, key="x" * 100)
    assert [len(r.events) for r in batches([huge, huge], max_bytes=10)] == [1, 1]
    assert list(batches([])) == []


def test_watchers_share_converted_upserts_but_filter_on_their_own() -> None:
    cache = UpsertCache(size=2)
    a_only = WatchView(("registration",), StateFilter(domain="a.example"), False, cache)
    everyone = WatchView(("registration",), StateFilter(), False, cache)
    change = _set("1-0", "1000", "a.example")
    first, second = everyone.change(change), a_only.change(change)
    assert first is not None and first is second
    other = _set("2-0", "1001", "b.example")
    assert everyone.change(other) is not None and a_only.change(other) is None
    for n in range(3, 6):  # pushes the first one out of the bounded cache
        everyone.change(_set(f"{n}-0", "1002"))
    again = a_only.change(change)
    assert again is not None and again is not first and again == first
