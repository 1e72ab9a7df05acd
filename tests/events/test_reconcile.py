"""Reading FreeSWITCH's own tables (exact reply formats) and planning corrections (pure)."""

from __future__ import annotations

import pytest

from event_service.ingest import reconcile, registrations
from event_service.ingest.events import Owner
from event_service.ingest.state import ChannelGone, ChannelRef, Rules
from tests import eslserver

NODE = "127.0.0.1:8021"
ROWS = {
    "internal": [
        {
            "call-id": "1-3359@127.0.0.1",
            "user": "1000@127.0.0.1",
            "contact": '"" <sip:1000@127.0.0.1:5071;transport=UDP>',
            "agent": "sipp & co",
        }
    ],
    "external": [],
}


def test_profiles_skip_aliases_and_gateways() -> None:
    xml = eslserver._profiles_xml(["internal", "external"])
    xml = xml.replace(
        "</profiles>",
        "<gateway>\n<name>gw</name>\n<type>gateway</type>\n<data>x</data>\n"
        "<state>REGED</state>\n</gateway>\n</profiles>",
    )
    assert reconcile.profile_names(xml) == ["internal", "external"]


def test_registration_rows_are_unescaped() -> None:
    xml = eslserver._profile_reg_xml(ROWS, "sofia xmlstatus profile internal reg")
    (row,) = reconcile.registrations_of("internal", xml)
    assert row.owner == Owner("1000", "127.0.0.1")
    assert row.contact == '"" <sip:1000@127.0.0.1:5071;transport=UDP>'
    assert row.values["user-agent"] == "sipp & co"
    assert row.values["username"] == "1000"


def test_bad_replies_raise() -> None:
    with pytest.raises(reconcile.ReplyError):
        reconcile.registrations_of("x", "Invalid Profile!\n")
    with pytest.raises(reconcile.ReplyError):
        reconcile.channels_of("-ERR no reply\n")


def test_channels_json_with_and_without_rows() -> None:
    assert reconcile.channels_of(eslserver._channels_json([])) == []
    text = eslserver._channels_json([{"uuid": "u1", "callstate": "ACTIVE"}, {"uuid": "u2"}])
    assert reconcile.channels_of(text) == [
        reconcile.LiveChannel("u1", True),
        reconcile.LiveChannel("u2", False),
    ]


def test_plan_registrations_removes_missed_and_adds_unknown() -> None:
    rules = Rules(NODE)
    xml = eslserver._profile_reg_xml(ROWS, "sofia xmlstatus profile internal reg")
    live = reconcile.registrations_of("internal", xml)
    stale_id = registrations.device_id("false", NODE, "internal", Owner("1001", "h"), "", "")
    known = {"1001": {stale_id: registrations.Device(NODE, 1, {"from-user": "1001"})}}
    (add, remove) = reconcile.plan_registrations(known, live, rules, 42)
    assert add.field == "1000" and not add.remove
    (device,) = add.add.values()
    assert device.value["from-user"] == "1000" and device.at == 42
    assert remove.field == "1001" and remove.remove == (stale_id,)


def test_plan_registrations_keeps_known_devices_untouched() -> None:
    rules = Rules(NODE)
    xml = eslserver._profile_reg_xml(ROWS, "sofia xmlstatus profile internal reg")
    live = reconcile.registrations_of("internal", xml)
    ident = registrations.device_id("false", NODE, "internal", Owner("1000", "127.0.0.1"), "", "")
    known = {"1000": {ident: registrations.Device(NODE, 1, {"from-user": "1000"})}}
    assert reconcile.plan_registrations(known, live, rules, 42) == []


def test_plan_channels() -> None:
    known = {
        "ended": ChannelRef(NODE, "1000", "1000"),
        "ringing": ChannelRef(NODE, "1001", "1001"),
        "answered-while-away": ChannelRef(NODE, "1002", "1002"),
    }
    live = [
        reconcile.LiveChannel("ringing", False),
        reconcile.LiveChannel("answered-while-away", True),
        reconcile.LiveChannel("new", False),
    ]
    plan = reconcile.plan_channels(known, live)
    assert plan.gone == [ChannelGone("ended")]
    assert sorted(plan.to_dump) == ["answered-while-away", "new"]


def test_plan_registrations_replaces_a_device_freeswitch_replaced_while_we_were_away() -> None:
    """multiple-registrations off: another REGISTER (new call-id) replaced the one we know;
    we missed its event. Redis must show FreeSWITCH's row, not the old phone's contact."""
    rules = Rules(NODE)
    xml = eslserver._profile_reg_xml(ROWS, "sofia xmlstatus profile internal reg")
    live = reconcile.registrations_of("internal", xml)
    ident = registrations.device_id("false", NODE, "internal", Owner("1000", "127.0.0.1"), "", "")
    old = {"from-user": "1000", "call-id": "old-phone@10.0.0.9", "contact": "<sip:1000@10.0.0.9>"}
    known = {"1000": {ident: registrations.Device(NODE, 1, old)}}
    (sync,) = reconcile.plan_registrations(known, live, rules, 42)
    assert sync.field == "1000" and list(sync.add) == [ident]
    assert sync.add[ident].value["call-id"] == "1-3359@127.0.0.1"
    assert sync.add[ident].value["contact"] == '"" <sip:1000@127.0.0.1:5071;transport=UDP>'
