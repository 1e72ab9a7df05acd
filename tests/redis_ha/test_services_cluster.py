"""Both real services through a 3-master Redis Cluster (README, "Deployment")."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import grpc

from cti import redis_keys
from cti.redis_client import connect
from cti.v1 import events_pb2, events_pb2_grpc
from tests.directory.service import Service, name_values, parse_user, until
from tests.eslserver import FakeFreeSwitch, fixture_frames
from tests.redis_ha.services import directory_service, event_service
from tests.redis_ha.topology import Cluster, poll
from tests.support import REPO, free_port, wait_for_port

_counter = itertools.count()


def _extension(password: str) -> str:
    return json.dumps({"param": {"password": password}, "variable": {}, "attribute": {}})


def _has_password(service: Service, domain: str, password: str) -> bool:
    user = parse_user(service.lookup(domain, "1000"))[2]
    return name_values(user, "params", "param")["password"] == password


def test_directory_answers_and_follows_hand_writes_on_every_node(
    cluster: Cluster, cluster_url: str
) -> None:
    db = connect(cluster_url)
    with directory_service(cluster_url) as service:
        domains = [f"c{next(_counter)}.example" for _ in range(12)]  # over all 3 masters
        for domain in domains:
            db.hset(redis_keys.extensions(domain), "1000", _extension("first"))
        for domain in domains:
            assert _has_password(service, domain, "first")
        for domain in domains:  # a write by hand, on whichever node holds the domain
            db.hset(redis_keys.extensions(domain), "1000", _extension("second"))
        for domain in domains:
            until(partial(_has_password, service, domain, "second"), timeout=5)
    db.close()


def test_directory_caches_on_a_cluster(cluster_url: str) -> None:
    """One subscription per primary (more in tests/redis_ha/test_directory_cache_cluster.py)."""
    db = connect(cluster_url)
    db.hset(redis_keys.extensions("cached.example"), "1000", _extension("first"))
    with directory_service(cluster_url) as service:
        service.wait_until_live(timeout=10)
        assert _has_password(service, "cached.example", "first")
        hits = service.cache_count("hit")
        assert _has_password(service, "cached.example", "first")
        assert service.cache_count("hit") == hits + 1
    db.close()


# -- event service ------------------------------------------------------------------------
# On a Cluster the operator names both hashes with one hash tag, so every key the service
# uses (hashes, indexes, change log, leases, lists) is in one slot (README, "Redis ...").

TAGGED = {
    "registration": {
        "hash": "{cti}registrations",
        "channel": "cti-registrations",
        "list": "{cti}registration-events",
    },
    "call": {"hash": "{cti}calls"},
}
TOKEN = "cluster-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
Event = events_pb2.WatchEvent


def test_event_service_writes_registrations(cluster: Cluster, cluster_url: str) -> None:
    fs = FakeFreeSwitch().start()
    db = connect(cluster_url, decode_responses=True)
    pubsub = db.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe("cti-registrations")
    confirmed = pubsub.get_message(timeout=5)  # subscribed before anything is published
    assert confirmed is not None and confirmed["type"] == "subscribe"
    try:
        with event_service(cluster_url, fs.address, gui=TAGGED):
            fs.wait_subscribed()
            fs.send_frames(fixture_frames()[:2])  # two sofia::register events
            poll("2 registrations in Redis", lambda: db.hlen("{cti}registrations") == 2, 10)
            assert sorted(db.hkeys("{cti}registrations")) == ["1000", "1001"]
            assert db.hlen("{cti}registrations:devices") == 2
            assert db.xlen("{cti}:events:log") == 2  # the change log, in the same slot
            assert db.llen("{cti}registration-events") == 2
            assert db.get(f"{{cti}}:events:lease:{fs.address}")  # held by the service
            assert not db.exists("registrations", "cti:events:log")  # nothing untagged
            published: list[str] = []
            while len(published) < 2:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                assert message is not None, "a registration was not published"
                published.append(json.loads(message["data"])["username"])
            assert sorted(published) == ["1000", "1001"]
    finally:
        pubsub.close()
        db.close()
        fs.stop()


def test_event_service_grpc_reads_through_the_cluster(cluster: Cluster, cluster_url: str) -> None:
    fs = FakeFreeSwitch().start()
    db = connect(cluster_url, decode_responses=True)
    port = free_port()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = events_pb2_grpc.EventServiceStub(channel)
    frames = fixture_frames()  # 2 registrations, then calls of 1000
    try:
        with event_service(cluster_url, fs.address, gui=TAGGED, grpc_port=port, api_token=TOKEN):
            wait_for_port(port)  # bound after the node workers start
            fs.wait_subscribed()
            fs.send_frames(frames[:3])
            poll("2 registrations", lambda: db.hlen("{cti}registrations") == 2, 10)
            poll("a call of 1000", lambda: db.hexists("{cti}calls", "1000"), 10)

            got = stub.GetRegistration(
                events_pb2.GetRegistrationRequest(name="registrations/1001"), metadata=AUTH
            )
            assert got.name == "registrations/1001"
            listed = stub.ListRegistrations(events_pb2.ListRegistrationsRequest(), metadata=AUTH)
            assert [r.name for r in listed.registrations] == [
                "registrations/1000",
                "registrations/1001",
            ]
            calls = stub.ListExtensionCalls(events_pb2.ListExtensionCallsRequest(), metadata=AUTH)
            assert [c.name for c in calls.extension_calls] == ["calls/1000"]
            record = stub.GetExtensionCalls(
                events_pb2.GetExtensionCallsRequest(name="calls/1000"), metadata=AUTH
            )
            assert list(record.activity) == [record.current]  # one live call

            watch = stub.Watch(events_pb2.WatchRequest(), metadata=AUTH, timeout=30)
            events = (event for response in watch for event in response.events)
            snapshot = [next(events) for _ in range(4)]
            assert [(e.type, e.key) for e in snapshot[:3]] == [
                (Event.TYPE_SNAPSHOT, "1000"),
                (Event.TYPE_SNAPSHOT, "1001"),
                (Event.TYPE_SNAPSHOT, "1000"),
            ]
            assert snapshot[3].type == Event.TYPE_SNAPSHOT_COMPLETE
            assert snapshot[3].revision == db.xinfo_stream("{cti}:events:log")["last-generated-id"]
            fs.send_frames(frames[3:4])  # a second channel: Watch reads it from the log
            change = next(events)
            assert (change.type, change.kind) == (
                Event.TYPE_UPSERT,
                events_pb2.WATCH_KIND_EXTENSION_CALLS,
            )
            logged = db.xrange("{cti}:events:log", min=f"({snapshot[3].revision}", count=1)
            first_id, first = logged[0]  # type: ignore[index]
            assert (change.revision, change.key) == (first_id, first["key"])  # type: ignore[index]
            watch.cancel()
    finally:
        channel.close()
        db.close()
        fs.stop()


def test_event_service_refuses_untagged_names_on_a_cluster(cluster_url: str) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "cti.json"
        config.write_text(json.dumps({"gui": {"call": {"hash": "{cti}calls"}}}))
        done = subprocess.run(
            [sys.executable, "-m", "event_service", "--config", str(config)],
            cwd=REPO,
            env={**os.environ, "REDIS_URL": cluster_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    output = done.stdout + done.stderr
    assert "one hash slot" in output
    assert "'registrations'" in output  # names the key that is apart...
    assert "{cti}registrations" in output  # ...and says how to name them
