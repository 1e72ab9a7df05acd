"""The node worker end to end: fake FreeSWITCH event socket -> real Redis."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
import redis

from cti import redis_keys
from cti.config import CallTarget, EslNode, EventSettings, PublishTarget
from event_service.ingest.worker import NodeWorker
from tests.eslserver import FakeFreeSwitch, encode_event, fixture_frames, frame_headers
from tests.events.helpers import (
    A_LEG,
    B_LEG,
    SEED_FIELDS,
    captured,
    settings,
    subscriptions,
    until,
)
from tests.support import RedisServer


@contextmanager
def worker(
    redis_url: str, node: EslNode, config: EventSettings, owner: str = "replica-a"
) -> Iterator[NodeWorker]:
    stop = threading.Event()
    connection = redis.Redis.from_url(redis_url)
    running = NodeWorker(node, config, connection, owner, stop)
    running.start()
    try:
        yield running
    finally:
        stop.set()
        running.join(timeout=10)
        connection.close()


def node_of(fs: FakeFreeSwitch) -> EslNode:
    return EslNode("127.0.0.1", fs.port)


def stream(client: redis.Redis) -> list[dict[str, str]]:
    entries: list[tuple[str, dict[str, str]]] = client.xrange(redis_keys.EVENTS_LOG_STREAM)  # type: ignore[assignment]
    return [fields for _, fields in entries]


def test_captured_stream_yields_the_seed_shapes(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    frames = fixture_frames()
    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
        fs.send_frames(frames[:2])
        until(lambda: client.hlen("registrations") == 2, what="two registrations")
        value = json.loads(client.hget("registrations", "1000") or "")
        expected = captured()[0]
        expected["Core-UUID"] = fs.core_uuid
        assert value == expected
        fs.send_frames(frames[2:6])
        until(lambda: '"answer"' in (client.hget("calls", "1000") or ""), what="answer")
        in_call = json.loads(client.hget("calls", "1000") or "")
        assert in_call["notify"] == "answer" and in_call["activity"] == [A_LEG]
        assert in_call[A_LEG]["Caller-Channel-Answered-Time"] == "1795675311790594"
        fs.send_frames(frames[6:])
        until(lambda: client.hlen("registrations") == 0, what="all unregistered")
        until(lambda: "hangup" in (client.hget("calls", "1001") or ""), what="hangup")
    assert json.loads(client.hget("calls", "1001") or "") == {
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
    assert client.hlen(redis_keys.call_channels("calls")) == 0
    log = stream(client)
    assert [(e["kind"], e["op"], e["key"]) for e in log] == [
        ("registration", "set", "1000"),
        ("registration", "set", "1001"),
        ("call", "update", "1000"),
        ("call", "update", "1001"),
        ("call", "update", "1001"),
        ("call", "update", "1000"),
        ("call", "update", "1000"),
        ("call", "update", "1001"),
        ("registration", "delete", "1000"),
        ("registration", "set", "1001"),
        ("registration", "delete", "1001"),
    ]
    assert all(e["node"] == fs.address for e in log)
    assert json.loads(log[7]["value"]) == {  # what the change did, not the whole record
        "username": "1001",
        "current": B_LEG,
        "notify": "hangup",
        "call": json.loads(client.hget("calls", "1001") or "")[B_LEG],
        "active": False,
    }
    assert log[-1]["value"] == ""
    assert json.loads(log[-2]["value"])["call-id"] == "1-3431@127.0.0.1"


def test_channel_and_list_carry_the_same_json_bounded(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    config = settings(
        (node_of(fs),),
        registration=PublishTarget(
            "registrations", channel="gui:reg", list="gui:reg:list", list_max=3
        ),
        call=CallTarget("calls", channel="gui:call", list="gui:call:list", fields=SEED_FIELDS),
    )
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe("gui:reg", "gui:call")
    for _ in range(2):  # both subscriptions confirmed before anything is published
        assert until(lambda: pubsub.get_message(timeout=0.1), what="subscribed")["type"] == (
            "subscribe"
        )
    with worker(redis_url, node_of(fs), config) as running:
        until(running.connected.is_set, what="connected")
        fs.send_frames(fixture_frames())
        until(lambda: client.llen("gui:call:list") == 6, what="six call entries")
        until(lambda: client.hlen("registrations") == 0, what="unregistered")
    messages: list[tuple[str, dict[str, str]]] = []
    while len(messages) < 11:
        message = until(lambda: pubsub.get_message(timeout=0.1), what="11 messages")
        messages.append((message["channel"], json.loads(message["data"])))
    pubsub.close()
    reg_messages = [m for c, m in messages if c == "gui:reg"]
    call_messages = [m for c, m in messages if c == "gui:call"]
    assert [m["Event-Subclass"] for m in reg_messages] == [
        "sofia::register",
        "sofia::register",
        "sofia::unregister",
        "sofia::register",
        "sofia::expire",
    ]
    assert [m["notify"] for m in call_messages] == [
        "callout",
        "callin",
        "answer",
        "answer",
        "hangup",
        "hangup",
    ]
    # newest first, bounded to list_max=3 (5 pushed, 2 dropped)
    listed = [json.loads(v)["Event-Subclass"] for v in client.lrange("gui:reg:list", 0, -1)]
    assert listed == ["sofia::expire", "sofia::register", "sofia::unregister"]
    assert [json.loads(v)["notify"] for v in client.lrange("gui:call:list", 0, -1)] == [
        "hangup",
        "hangup",
        "answer",
        "answer",
        "callin",
        "callout",
    ]


def test_multi_domain_keys(fs: FakeFreeSwitch, client: redis.Redis, redis_url: str) -> None:
    config = settings((node_of(fs),), key_with_domain=True)
    with worker(redis_url, node_of(fs), config) as running:
        until(running.connected.is_set, what="connected")
        first = captured()[0]
        other = dict(first, **{"from-host": "tenant-b.example", "call-id": "b"})
        fs.send_event(first)
        fs.send_event(other)
        fs.send_frames(fixture_frames()[2:4])
        until(lambda: client.hlen("registrations") == 2, what="two tenants")
        until(lambda: client.hlen("calls") == 2, what="two call records")
        fs.send_event(dict(captured()[8], **{"from-host": "tenant-b.example"}))
        until(lambda: client.hlen("registrations") == 1, what="tenant b unregistered")
    assert client.hkeys("registrations") == ["1000@127.0.0.1"]
    assert sorted(client.hkeys("calls")) == ["1000@127.0.0.1", "1001@127.0.0.1"]


def test_disconnect_mid_call_then_reconcile_finds_the_hangup(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    frames = fixture_frames()
    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
        fs.send_frames(frames[:6])  # registered, call answered
        until(lambda: '"answer"' in (client.hget("calls", "1000") or ""), what="answer")
        # while we are cut off: the call ends, 1000 unregisters; FreeSWITCH's tables say so
        fs.set_state(
            registrations={"internal": [{"user": "1001@127.0.0.1", "call-id": "1-3370@127.0.0.1"}]},
            channels=[],
        )
        reconciles = running.reconciles
        fs.drop()
        until(lambda: running.reconciles > reconciles, what="reconcile after reconnect")
    for key, uuid in (("1000", A_LEG), ("1001", B_LEG)):
        record = json.loads(client.hget("calls", key) or "")
        assert record["notify"] == "hangup" and record["current"] == uuid
        assert record["activity"] == []
    assert client.hkeys("registrations") == ["1001"]
    assert client.hlen(redis_keys.call_channels("calls")) == 0


def test_restart_with_new_core_uuid_reconciles(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    frames = fixture_frames()
    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
        fs.send_frames(frames[:4])  # two registrations, a call ringing
        until(lambda: client.hlen("calls") == 2, what="call records")
        reconciles = running.reconciles
        # FreeSWITCH restarted: its tables are empty and events carry a new Core-UUID
        fs.set_state(registrations={"internal": []}, channels=[])
        fs.core_uuid = "new-core-uuid"
        fs.send_event({"Event-Name": "HEARTBEAT"})
        until(lambda: running.reconciles > reconciles, what="reconcile on restart")
        until(lambda: client.hlen("registrations") == 0, what="registrations gone")
    assert running.core_uuid == "new-core-uuid"
    assert all(json.loads(v)["activity"] == [] for v in client.hvals("calls"))


def test_periodic_reconcile_removes_what_freeswitch_dropped_silently(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    """FreeSWITCH drops a slow reader's events without closing the socket: the unregister
    never arrives, and only the periodic reconcile (connection still up) notices."""
    frames = fixture_frames()
    configured = settings((node_of(fs),), reconcile_interval=0.5)
    with worker(redis_url, node_of(fs), configured) as running:
        until(running.connected.is_set, what="connected")
        fs.send_frames(frames[:2])  # 1000 and 1001 register
        until(lambda: client.hlen("registrations") == 2, what="registrations")
        fs.set_state(
            registrations={"internal": [{"user": "1001@127.0.0.1", "call-id": "1-3370@127.0.0.1"}]},
            channels=[],
        )
        until(lambda: client.hkeys("registrations") == ["1001"], what="periodic reconcile")
        assert subscriptions(fs) == 1  # no reconnect: the periodic reconcile did it


def test_reconcile_adds_what_began_while_away(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    answered = dict(captured()[5])  # A-leg as uuid_dump shows an answered channel
    answered["Event-Name"] = "CHANNEL_DATA"
    fs.set_state(
        registrations={
            "internal": [
                {
                    "user": "1000@127.0.0.1",
                    "call-id": "1-3359@127.0.0.1",
                    "contact": '"" <sip:1000@127.0.0.1:5071;transport=UDP>',
                    "agent": "sipp-harness",
                }
            ]
        },
        channels=[{"uuid": A_LEG, "callstate": "ACTIVE", "presence_id": "1000@127.0.0.1"}],
        dumps={A_LEG: answered},
    )
    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
    registration = json.loads(client.hget("registrations", "1000") or "")
    assert registration["contact"] == '"" <sip:1000@127.0.0.1:5071;transport=UDP>'
    assert registration["user-agent"] == "sipp-harness"
    assert registration["Event-Subclass"] == "sofia::register"
    record = json.loads(client.hget("calls", "1000") or "")
    assert record["notify"] == "answer" and record["activity"] == [A_LEG]
    assert record[A_LEG]["Caller-Channel-Answered-Time"] == "1795675311790594"
    # and then events continue from there: the register refresh replaces the synthetic value
    assert any(c.startswith("api uuid_dump") for c in fs.commands)


def test_unreachable_freeswitch_is_logged_once(
    client: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = FakeFreeSwitch()
    port = dead.port
    dead.stop()  # nothing listens there now
    node = EslNode("127.0.0.1", port)
    with worker(redis_url, node, settings((node,))) as running:
        until(lambda: running.lease.client.get(running.lease.key), what="lease taken")
        until(
            lambda: sum("cannot reach FreeSWITCH" in r.getMessage() for r in caplog.records),
            what="warning",
        )
        threading.Event().wait(1.0)  # several retries happen meanwhile
    warnings = [r for r in caplog.records if "cannot reach FreeSWITCH" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == f"cannot reach FreeSWITCH at 127.0.0.1:{port}, retrying"


def test_wrong_password_is_named_once_and_not_a_crash(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    node = replace(node_of(fs), password="wrong")
    expected = f"FreeSWITCH at {fs.address} refused the ESL password, retrying"
    with worker(redis_url, node, settings((node,))) as running:
        until(lambda: any(r.getMessage() == expected for r in caplog.records), what="warning")
        until(lambda: fs.commands.count("auth wrong") >= 4, what="retries")
        assert not running.connected.is_set()
        assert running.is_alive()
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count(expected) == 1
    assert not any("cannot reach FreeSWITCH" in m for m in messages)


def test_redis_restarting_empty_is_rebuilt_from_freeswitch(
    fs: FakeFreeSwitch,
    client: redis.Redis,
    redis_url: str,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames = fixture_frames()
    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
        fs.send_frames(frames[:4])  # two registrations, a ringing call
        until(lambda: client.hlen("calls") == 2, what="call records")
        fs.set_state(
            registrations={"internal": [{"user": "1001@127.0.0.1", "call-id": "x"}]},
            channels=[{"uuid": B_LEG, "callstate": "RINGING"}],
            dumps={B_LEG: dict(captured()[3], **{"Event-Name": "CHANNEL_DATA"})},
        )
        redis_server.stop()  # no persistence: it comes back empty
        fs.send_frames(frames[4:5])  # cannot be written now
        until(
            lambda: any("cannot reach Redis" in r.getMessage() for r in caplog.records),
            what="redis warning",
        )
        redis_server.start()
        until(lambda: client.hexists("registrations", "1001"), what="rebuilt", timeout=20)
        until(lambda: client.hexists("calls", "1001"), what="call rebuilt")
    assert client.hkeys("registrations") == ["1001"]
    record = json.loads(client.hget("calls", "1001") or "")
    assert record["activity"] == [B_LEG] and record["notify"] == "callin"
    assert not client.hexists("calls", "1000")  # its A-leg is not in FreeSWITCH's table
    assert sum("cannot reach Redis" in r.getMessage() for r in caplog.records) == 1


def test_unreadable_reconcile_reply_is_retried_not_applied(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client.hset("registrations", "1000", "{}")  # untouched until reconcile succeeds
    fs.api_replies["sofia xmlstatus"] = "-ERR sofia Command not found!\n"
    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(lambda: fs.connections >= 2, what="a retry")
        assert not running.connected.is_set()
        assert client.hlen("registrations") == 1
        fs.set_state()  # sofia answers again: empty tables
        until(running.connected.is_set, what="connected")
    assert client.hlen("registrations") == 0  # backed by no device anywhere: stale
    unreadable = [r for r in caplog.records if "tables unreadable" in r.getMessage()]
    assert len(unreadable) == 1


def test_reconcile_removes_entries_nothing_backs(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    """Written by hand (or left by lost bookkeeping): FreeSWITCH has none of it."""
    client.hset("registrations", "1000", json.dumps(captured()[0]))
    stale = {
        "username": "1001",
        "current": "gone",
        "notify": "answer",
        "gone": {},
        "activity": ["gone"],
    }
    client.hset("calls", "1001", json.dumps(stale))
    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
    assert not client.hexists("registrations", "1000")
    record = json.loads(client.hget("calls", "1001") or "")
    assert record["notify"] == "hangup" and record["activity"] == []
    assert [(e["kind"], e["op"], e["key"]) for e in stream(client)] == [
        ("registration", "delete", "1000"),
        ("call", "update", "1001"),
    ]


def test_corrupt_frame_reconnects_and_reconciles(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    frames = fixture_frames()
    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
        fs.send_frames(frames[:2])
        until(lambda: client.hlen("registrations") == 2, what="registered")
        # FreeSWITCH's truth: 1000 unregistered meanwhile; the frame saying so is garbled
        fs.set_state(registrations={"internal": [{"user": "1001@127.0.0.1", "call-id": "x"}]})
        done = running.reconciles
        fs.send_raw(b"Content-Type: text/unknown\n\n")
        until(lambda: running.reconciles > done, what="reconcile after the corrupt frame")
    assert client.hkeys("registrations") == ["1001"]
    assert subscriptions(fs) == 2


def test_events_read_just_before_the_socket_closes_are_applied(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    """FreeSWITCH shutting down sends its hangups and closes the socket: the events it
    sent must not be thrown away with the connection (no reconcile can fix Redis while
    FreeSWITCH stays down)."""
    frames = fixture_frames()
    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
        fs.send_frames(frames[:6])  # registered, call answered
        until(lambda: '"answer"' in (client.hget("calls", "1001") or ""), what="answer")
        hangups = [frame_headers(f) for f in frames[6:8]]
        for headers in hangups:
            headers["Core-UUID"] = fs.core_uuid
        # from now on FreeSWITCH is as good as down: no reconcile can succeed
        fs.api_replies["sofia xmlstatus"] = "-ERR shutting down\n"
        fs.send_raw(b"".join(encode_event(h) for h in hangups))
        fs.drop()
        until(lambda: not running.connected.is_set(), what="disconnected")

        def hung_up(key: str) -> bool:
            return bool(json.loads(client.hget("calls", key) or "{}").get("activity") == [])

        until(lambda: hung_up("1000") and hung_up("1001"), timeout=5, what="hangups applied")


def test_a_flush_cut_off_by_a_disconnect_becomes_a_whole_cache_flush(
    fs: FakeFreeSwitch, redis_url: str
) -> None:
    """The socket drops while the flush is on its way: FreeSWITCH may still cache the old
    user (its old password), so the flush must not be forgotten."""
    cut = threading.Event()

    def drop_once(command: str) -> str:
        if not cut.is_set():
            cut.set()
            fs.drop()  # no reply: the connection is gone
        return "+OK\n"

    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
        fs.api_replies["xml_flush_cache"] = drop_once
        running.flush("xml_flush_cache", "id 1000 127.0.0.1")
        until(cut.is_set, what="flush sent")
        until(
            lambda: fs.commands.count("api xml_flush_cache") == 1,
            timeout=5,
            what="whole-cache flush after the reconnect",
        )


def test_lag_is_observed_for_every_event_and_the_oldest_unapplied_one_is_a_gauge(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    from prometheus_client import REGISTRY

    from tests.eslserver import call_events, stamped

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"node": fs.address}) or 0.0

    with worker(redis_url, node_of(fs), settings((node_of(fs),))) as running:
        until(running.connected.is_set, what="connected")
        before = sample("cti_events_apply_lag_seconds_count")
        events = [stamped(e) for n in range(40) for e in call_events(f"lag-{n}")]
        fs.send_events(events)  # one write: batches of many events
        until(
            lambda: sample("cti_events_apply_lag_seconds_count") - before == len(events),
            what="one observation per event",
        )
        assert sample("cti_events_oldest_unapplied_seconds") == 0.0  # everything applied
        running._pending_since = 1.0  # as if an event stamped long ago were being applied
        assert sample("cti_events_oldest_unapplied_seconds") > 1e9
