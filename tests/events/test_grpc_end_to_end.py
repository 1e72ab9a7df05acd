"""End to end: the whole event service (ESL worker + gRPC API) against the fake FreeSWITCH
event socket replaying the captured frames; a Watch client sees every change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from cti.config import EslNode
from cti.grpc_server import error_info
from cti.v1 import events_pb2, events_pb2_grpc
from event_service.app import EventService
from tests.eslserver import FakeFreeSwitch, fixture_frames
from tests.events.grpc_support import AUTH, Watching, settings_for
from tests.events.helpers import SEED_FIELDS, captured
from tests.support import free_port

Event = events_pb2.WatchEvent


@pytest.fixture
def fs() -> Iterator[FakeFreeSwitch]:
    server = FakeFreeSwitch().start()
    yield server
    server.stop()


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
