"""ESL headers -> typed events, with the literal captured frames."""

from __future__ import annotations

from event_service.ingest.events import (
    SUBSCRIPTION,
    ChannelEvent,
    Heartbeat,
    Owner,
    RegistrationEvent,
    classify,
    parse_plain,
)
from tests.events.helpers import A_LEG, B_LEG, captured
from tests.support import ESL_DIR


def test_parse_plain_decodes_values_and_keeps_the_last_duplicate() -> None:
    body = (ESL_DIR / "007_CHANNEL_HANGUP_COMPLETE.txt").read_text().partition("\n\n")[2]
    headers = parse_plain(body)
    assert headers["Event-Date-GMT"].startswith("Thu, 26 Nov 2026 06:41:")
    assert headers["Channel-Presence-ID"] == "1000@127.0.0.1"
    assert headers["Hangup-Cause"] == "NORMAL_CLEARING"


def test_subscription_names_plain_events_first_and_custom_subclasses_last() -> None:
    words = SUBSCRIPTION.split()
    custom = words.index("CUSTOM")
    assert words[custom + 1 :] == [
        "sofia::register",
        "sofia::unregister",
        "sofia::expire",
        "sofia::transferor",
        "sofia::transferee",
    ]
    assert {
        "CHANNEL_CREATE",
        "CHANNEL_ANSWER",
        "CHANNEL_BRIDGE",
        "CALL_UPDATE",
        "CHANNEL_HANGUP_COMPLETE",
        "BACKGROUND_JOB",
        "HEARTBEAT",
    } == set(words[:custom])


def test_registration_events_name_the_aor() -> None:
    events = [classify(h) for h in captured()]
    register, unregister, expire = events[0], events[8], events[10]
    assert isinstance(register, RegistrationEvent) and register.action == "register"
    assert register.owner == Owner("1000", "127.0.0.1")
    assert register.contact == '"" <sip:1000@127.0.0.1:5071;transport=UDP>'
    assert register.call_id == "1-3359@127.0.0.1"
    assert register.profile == "internal"
    assert register.timestamp == 1795675309710591
    assert isinstance(unregister, RegistrationEvent) and unregister.action == "unregister"
    assert unregister.owner == Owner("1000", "127.0.0.1")
    assert isinstance(expire, RegistrationEvent) and expire.action == "expire"
    assert expire.owner == Owner("1001", "127.0.0.1")  # from user/host, not from-user


def test_channel_legs_belong_to_the_authenticated_caller_and_the_dialed_callee() -> None:
    events = [classify(h) for h in captured()[2:8]]
    assert all(isinstance(e, ChannelEvent) for e in events)
    by_action = [(e.action, e.uuid, e.owner, e.notify) for e in events]  # type: ignore[union-attr]
    assert by_action == [
        ("create", A_LEG, Owner("1000", "127.0.0.1"), "callout"),
        # The B-leg's Caller-Username is the CALLER (1000): the dialed user decides.
        ("create", B_LEG, Owner("1001", "127.0.0.1"), "callin"),
        ("answer", B_LEG, Owner("1001", "127.0.0.1"), "answer"),
        ("answer", A_LEG, Owner("1000", "127.0.0.1"), "answer"),
        ("hangup", A_LEG, Owner("1000", "127.0.0.1"), "hangup"),
        ("hangup", B_LEG, Owner("1001", "127.0.0.1"), "hangup"),
    ]


def test_an_unauthenticated_inbound_leg_is_no_extensions() -> None:
    headers = dict(captured()[2])
    del headers["variable_user_name"]
    del headers["variable_sip_auth_username"]
    event = classify(headers)
    assert isinstance(event, ChannelEvent) and event.owner is None


def test_caller_id_is_never_the_key() -> None:
    headers = dict(captured()[2])
    headers["Caller-Caller-ID-Number"] = "5551234"
    headers["Caller-ANI"] = "5551234"
    event = classify(headers)
    assert isinstance(event, ChannelEvent) and event.owner == Owner("1000", "127.0.0.1")


def test_heartbeat_and_unused_events() -> None:
    assert classify({"Event-Name": "HEARTBEAT", "Core-UUID": "x"}) == Heartbeat("x")
    assert classify({"Event-Name": "CHANNEL_STATE", "Unique-ID": "u"}) is None
    assert classify({"Event-Name": "CUSTOM", "Event-Subclass": "sofia::gateway_state"}) is None
    assert classify({"Event-Name": "CHANNEL_CREATE"}) is None  # no Unique-ID
