"""End to end: the whole event service (ESL worker + gRPC API) against the fake FreeSWITCH
event socket replaying the captured frames; a Watch client sees every change."""

from __future__ import annotations

import json
from dataclasses import replace

import grpc
import pytest

from cti.api_errors import error_info
from cti.config import EslNode
from cti.v1 import events_pb2, events_pb2_grpc
from event_service.app import EventService
from tests.eslserver import FakeFreeSwitch, call_events, fixture_frames, stamped
from tests.events.grpc_support import AUTH, Watching, settings_for
from tests.events.helpers import SEED_FIELDS, captured
from tests.support import free_port

Event = events_pb2.WatchEvent


def test_watch_follows_the_captured_freeswitch_traffic(fs: FakeFreeSwitch, redis_url: str) -> None:
    port = free_port()
    settings = settings_for(redis_url, port)
    settings = replace(
        settings,
        events=replace(
            settings.events,
            nodes=(EslNode("127.0.0.1", fs.port),),
            call=replace(settings.events.call, fields=SEED_FIELDS),
        ),
    )
    service = EventService(settings)
    service.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = events_pb2_grpc.EventServiceStub(channel)
    try:
        fs.wait_subscribed()
        stream = Watching(stub.Watch(events_pb2.WatchRequest(), metadata=AUTH, timeout=30))
        snapshot = next(stream)
        assert snapshot.type == Event.TYPE_SNAPSHOT_COMPLETE  # nothing registered yet

        fs.send_frames(fixture_frames())
        changes = [next(stream) for _ in range(11)]
        assert [
            (Event.Type.Name(c.type), events_pb2.WatchKind.Name(c.kind), c.key) for c in changes
        ] == [
            ("TYPE_UPSERT", "WATCH_KIND_REGISTRATIONS", "1000"),
            ("TYPE_UPSERT", "WATCH_KIND_REGISTRATIONS", "1001"),
            ("TYPE_UPSERT", "WATCH_KIND_EXTENSION_CALLS", "1000"),
            ("TYPE_UPSERT", "WATCH_KIND_EXTENSION_CALLS", "1001"),
            ("TYPE_UPSERT", "WATCH_KIND_EXTENSION_CALLS", "1001"),
            ("TYPE_UPSERT", "WATCH_KIND_EXTENSION_CALLS", "1000"),
            ("TYPE_UPSERT", "WATCH_KIND_EXTENSION_CALLS", "1000"),
            ("TYPE_UPSERT", "WATCH_KIND_EXTENSION_CALLS", "1001"),
            ("TYPE_DELETE", "WATCH_KIND_REGISTRATIONS", "1000"),
            ("TYPE_UPSERT", "WATCH_KIND_REGISTRATIONS", "1001"),
            ("TYPE_DELETE", "WATCH_KIND_REGISTRATIONS", "1001"),
        ]
        assert {c.node for c in changes} == {fs.address}
        expected = dict(captured()[0], **{"Core-UUID": fs.core_uuid})
        assert dict(changes[0].registration.headers) == expected
        assert json.loads(changes[0].registration.json) == expected
        assert [c.extension_calls.notify for c in changes[2:8]] == [
            "callout",
            "callin",
            "answer",
            "answer",
            "hangup",
            "hangup",
        ]
        final = stub.GetExtensionCalls(
            events_pb2.GetExtensionCallsRequest(name="calls/1000"), metadata=AUTH
        )
        assert final.json == changes[6].extension_calls.json
        assert final.notify == "hangup" and not final.activity

        service.stop_event.set()
        service.stop()  # SIGTERM path: the open Watch ends so the client can resume
        with pytest.raises(grpc.RpcError) as error:
            next(stream)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(error.value)[0] == "SHUTTING_DOWN"
    finally:
        channel.close()
        service.stop_event.set()
        if service.grpc_server is not None:
            service.grpc_server.stop(0)


def _apply_call_change(record: dict[str, object], change: events_pb2.CallChange) -> None:
    """What a client does with a ``CallChange`` (the rule written in events.proto)."""
    record["username"] = change.username
    record["current"], record["notify"] = change.current, change.notify
    activity = record.setdefault("activity", [])
    assert isinstance(activity, list)
    record[change.call.uuid] = dict(change.call.fields)
    if change.call.active and change.call.uuid not in activity:
        activity.append(change.call.uuid)
    if not change.call.active and change.call.uuid in activity:
        activity.remove(change.call.uuid)
    for uuid in [k for k in record if k not in ("username", "current", "notify", "activity")]:
        if uuid != change.current and uuid not in activity:
            del record[uuid]
    record["activity"] = record.pop("activity")  # the seed's key order: activity last


def test_watch_with_call_changes_and_whole_records_agree(
    fs: FakeFreeSwitch, redis_url: str
) -> None:
    """One extension holding many live calls: a ``call_changes`` watcher gets one call per
    change and rebuilds the stored record exactly; a whole-record watcher (older clients),
    also one resumed from the middle, gets the whole stored record."""
    port = free_port()
    settings = settings_for(redis_url, port)
    settings = replace(
        settings,
        events=replace(
            settings.events,
            nodes=(EslNode("127.0.0.1", fs.port),),
            call=replace(settings.events.call, fields=SEED_FIELDS),
        ),
    )
    service = EventService(settings)
    service.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = events_pb2_grpc.EventServiceStub(channel)
    kinds = [events_pb2.WATCH_KIND_EXTENSION_CALLS]
    try:
        fs.wait_subscribed()
        request = events_pb2.WatchRequest(kinds=kinds)
        whole = Watching(stub.Watch(request, metadata=AUTH, timeout=30))
        deltas = Watching(
            stub.Watch(
                events_pb2.WatchRequest(kinds=kinds, call_changes=True), metadata=AUTH, timeout=30
            )
        )
        assert next(whole).type == next(deltas).type == Event.TYPE_SNAPSHOT_COMPLETE
        legs = [call_events(f"call-{n:04d}") for n in range(30)]
        fs.send_events([stamped(create) for create, _, _ in legs])
        fs.send_events([stamped(answer) for _, answer, _ in legs])
        fs.send_events([stamped(hangup) for _, _, hangup in legs[:10]])  # 20 stay live
        changes = 70
        whole_events = [next(whole) for _ in range(changes)]
        delta_events = [next(deltas) for _ in range(changes)]
        stored = stub.GetExtensionCalls(
            events_pb2.GetExtensionCallsRequest(name="calls/1000"), metadata=AUTH
        )
        assert len(stored.activity) == 20
        assert whole_events[-1].extension_calls.json == stored.json
        assert all(e.HasField("call_change") for e in delta_events)
        rebuilt: dict[str, object] = {}
        for event in delta_events:
            _apply_call_change(rebuilt, event.call_change)
        assert rebuilt == json.loads(stored.json)
        assert list(rebuilt) == list(json.loads(stored.json))
        # a change is one call, however many the record holds
        assert delta_events[-1].ByteSize() < whole_events[-1].ByteSize() / 10
        # an older client resuming mid-way gets whole records again
        token = whole_events[34].revision
        resumed = Watching(
            stub.Watch(
                events_pb2.WatchRequest(kinds=kinds, resume_token=token), metadata=AUTH, timeout=30
            )
        )
        first = next(resumed)
        assert first.extension_calls.json == stored.json
        assert first.revision == whole_events[-1].revision
        fs.send_events([stamped(legs[10][2])])
        after = next(resumed)
        assert (
            json.loads(after.extension_calls.json)["activity"]
            == json.loads(stored.json)["activity"][1:]
        )
    finally:
        channel.close()
        service.stop_event.set()
        service.stop()
