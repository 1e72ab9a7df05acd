"""Several nodes merging in one Redis, two replicas sharing a node through the lease, and
the directory change -> xml_flush_cache path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest
import redis

from cti import redis_keys
from cti.changes import DirectoryChange
from cti.config import EslNode
from event_service.ingest.flush import ChangeFlusher, flush_commands
from event_service.ingest.lease import Lease
from event_service.ingest.worker import NodeWorker
from tests.eslserver import FakeFreeSwitch, fixture_frames
from tests.events.helpers import captured, settings, until
from tests.support import RedisServer


@pytest.fixture
def two_fs() -> Iterator[tuple[FakeFreeSwitch, FakeFreeSwitch]]:
    a, b = FakeFreeSwitch().start(), FakeFreeSwitch().start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    yield connection
    connection.close()


class Replica:
    """What one event-service process runs for some nodes (threads + its own client)."""

    def __init__(
        self, redis_url: str, nodes: tuple[EslNode, ...], owner: str, **kw: object
    ) -> None:
        self.stop = threading.Event()
        self.client = redis.Redis.from_url(redis_url)
        config = settings(nodes, **kw)  # type: ignore[arg-type]
        self.workers = [NodeWorker(n, config, self.client, owner, self.stop) for n in nodes]
        for worker in self.workers:
            worker.start()

    def close(self) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=10)
        self.client.close()


def node(fs: FakeFreeSwitch) -> EslNode:
    return EslNode("127.0.0.1", fs.port)


def test_two_nodes_merge_and_reconciling_one_keeps_the_other(
    two_fs: tuple[FakeFreeSwitch, FakeFreeSwitch], client: redis.Redis, redis_url: str
) -> None:
    a, b = two_fs
    replica = Replica(redis_url, (node(a), node(b)), "r1")
    try:
        until(lambda: all(w.connected.is_set() for w in replica.workers), what="both up")
        frames = fixture_frames()
        a.send_frames(frames[:1] + frames[2:3])  # 1000 registers and calls out on node A
        b.send_frames(frames[:1])  # the same extension also registered on node B
        until(
            lambda: (
                len(
                    json.loads(
                        client.hget(redis_keys.registration_devices("registrations"), "1000")
                        or "{}"
                    )
                )
                == 2
            ),
            what="two devices",
        )
        until(lambda: client.hlen("calls") == 1, what="call on A")
        # node A restarts and forgets everything; node B still holds its registration
        worker_a = replica.workers[0]
        done = worker_a.reconciles
        a.set_state(registrations={"internal": []}, channels=[])
        a.drop()
        until(lambda: worker_a.reconciles > done, what="A reconciled")
        devices = json.loads(
            client.hget(redis_keys.registration_devices("registrations"), "1000") or "{}"
        )
        assert [d["node"] for d in devices.values()] == [b.address]
        assert client.hexists("registrations", "1000")
        record = json.loads(client.hget("calls", "1000") or "")
        assert record["notify"] == "hangup" and record["activity"] == []
    finally:
        replica.close()


def test_lease_hands_a_node_over_when_its_replica_dies(
    two_fs: tuple[FakeFreeSwitch, FakeFreeSwitch], client: redis.Redis, redis_url: str
) -> None:
    fs = two_fs[0]
    first = Replica(redis_url, (node(fs),), "replica-1", lease_seconds=0.6)
    second: Replica | None = None
    try:
        until(first.workers[0].connected.is_set, what="first consumes")
        second = Replica(redis_url, (node(fs),), "replica-2", lease_seconds=0.6)
        threading.Event().wait(0.5)  # second keeps trying meanwhile
        assert not second.workers[0].connected.is_set()
        assert fs.subscribed_clients() == 1
        assert client.get(redis_keys.node_lease(fs.address, "registrations")) == "replica-1"
        # replica 1 dies without releasing (its lease just expires)
        first.workers[0].lease.release = lambda: None  # type: ignore[method-assign]
        first.close()
        done = fs.connections
        until(second.workers[0].connected.is_set, what="second takes over")
        assert fs.connections > done
        assert second.workers[0].reconciles >= 1
        fs.send_frames(fixture_frames()[:1])
        until(lambda: client.hexists("registrations", "1000"), what="second applies events")
        assert client.get(redis_keys.node_lease(fs.address, "registrations")) == "replica-2"
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_replica_that_lost_its_lease_writes_nothing(client: redis.Redis, redis_url: str) -> None:
    from event_service.ingest.events import RegistrationEvent, classify
    from event_service.ingest.store import LeaseLost, StateStore

    connection = redis.Redis.from_url(redis_url)
    ours = Lease(connection, "n:1", "me", 5, registration_hash="registrations")
    assert ours.acquire()
    store = StateStore(connection, settings(), "n:1", ours)
    first, second = classify(captured()[0]), classify(captured()[1])
    assert isinstance(first, RegistrationEvent) and isinstance(second, RegistrationEvent)
    assert store.apply([first]) == 1
    client.set(redis_keys.node_lease("n:1", "registrations"), "someone-else")
    with pytest.raises(LeaseLost):
        store.apply([second])
    assert client.hkeys("registrations") == ["1000"]
    assert not ours.renew()
    ours.release()  # not ours: must not delete
    assert client.get(redis_keys.node_lease("n:1", "registrations")) == "someone-else"
    connection.close()


def test_flush_commands() -> None:
    change = DirectoryChange("extension", "update", "example.com", "1001", "alice", "al")
    assert flush_commands(change) == [
        ("xml_flush_cache", "id 1001 example.com"),
        ("xml_flush_cache", "id alice example.com"),
        ("xml_flush_cache", "id al example.com"),
    ]
    assert flush_commands(DirectoryChange("template", "update", template="t")) == [
        ("xml_flush_cache", "")
    ]
    assert flush_commands(DirectoryChange("domain", "delete", "example.com")) == [
        ("xml_flush_cache", "")
    ]


def test_directory_change_flushes_every_connected_freeswitch(
    two_fs: tuple[FakeFreeSwitch, FakeFreeSwitch], client: redis.Redis, redis_url: str
) -> None:
    a, b = two_fs
    replica = Replica(redis_url, (node(a), node(b)), "r1")
    flusher_stop = threading.Event()

    def send(commands: Sequence[tuple[str, str]]) -> None:
        for worker in replica.workers:
            for command, argument in commands:
                worker.flush(command, argument)

    flusher = ChangeFlusher(redis_url, send, flusher_stop)
    flusher.start()
    try:
        until(lambda: all(w.connected.is_set() for w in replica.workers), what="both up")
        until(flusher.subscribed.is_set, what="flusher subscribed")
        client.publish(redis_keys.DIRECTORY_CHANGES_CHANNEL, "not json")  # ignored
        change = DirectoryChange("extension", "update", "example.com", "1001", "alice")
        client.publish(redis_keys.DIRECTORY_CHANGES_CHANNEL, change.to_json())
        wanted = "api xml_flush_cache id alice example.com"
        until(lambda: wanted in a.commands and wanted in b.commands, what="flush on both")
        assert "api xml_flush_cache id 1001 example.com" in a.commands
        assert "api xml_flush_cache id 1001 example.com" in b.commands
    finally:
        flusher_stop.set()
        flusher.join(timeout=5)
        replica.close()


def test_a_change_naming_an_id_with_a_line_break_cannot_inject_commands(
    two_fs: tuple[FakeFreeSwitch, FakeFreeSwitch], client: redis.Redis, redis_url: str
) -> None:
    """The change channel is plain Redis pub/sub: a blank line inside an id would end the
    ``api`` command and start another (``system ...``) on FreeSWITCH. Such an id gets
    the whole cache flushed instead."""
    a, _ = two_fs
    replica = Replica(redis_url, (node(a),), "r1")
    stop = threading.Event()
    worker = replica.workers[0]

    def send(commands: Sequence[tuple[str, str]]) -> None:
        for command, argument in commands:
            worker.flush(command, argument)

    flusher = ChangeFlusher(redis_url, send, stop)
    flusher.start()
    try:
        until(worker.connected.is_set, what="connected")
        until(flusher.subscribed.is_set, what="flusher subscribed")
        change = {
            "kind": "extension",
            "op": "update",
            "domain": "example.com",
            "extension": "1000\n\napi system echo pwned",
        }
        client.publish(redis_keys.DIRECTORY_CHANGES_CHANNEL, json.dumps(change))
        # a second change: once its flush arrived, everything sent before it has too
        after = DirectoryChange("extension", "update", "example.com", "1001")
        client.publish(redis_keys.DIRECTORY_CHANGES_CHANNEL, after.to_json())
        marker = "api xml_flush_cache id 1001 example.com"
        until(lambda: marker in a.commands, what="the second flush")
    finally:
        stop.set()
        flusher.join(timeout=5)
        replica.close()
    flushes = [c for c in a.commands if c.startswith("api ") and c != marker]
    flushes = [c for c in flushes if not c.startswith(("api sofia", "api show"))]
    assert flushes == ["api xml_flush_cache"]


def test_settings_modes_reach_the_store(redis_url: str) -> None:
    config = replace(settings(), multiple_registrations={"internal": "true"})
    from event_service.ingest.store import StateStore

    connection = redis.Redis.from_url(redis_url)
    store = StateStore(connection, config, "n:1")
    assert store.rules.mode("internal") == "true"
    assert store.rules.mode("external") == "false"
    connection.close()


def test_a_change_while_freeswitch_was_away_flushes_its_whole_cache_on_return(
    two_fs: tuple[FakeFreeSwitch, FakeFreeSwitch], redis_url: str
) -> None:
    fs = two_fs[0]
    stop = threading.Event()
    connection = redis.Redis.from_url(redis_url)
    worker = NodeWorker(node(fs), settings((node(fs),)), connection, "r1", stop)
    worker.flush("xml_flush_cache", "id 1001 example.com")  # not connected yet
    worker.start()
    try:
        until(lambda: "api xml_flush_cache" in fs.commands, what="whole-cache flush")
        assert "api xml_flush_cache id 1001 example.com" not in fs.commands
    finally:
        stop.set()
        worker.join(timeout=10)
        connection.close()


def test_changes_missed_while_the_subscription_was_down_flush_the_whole_cache(
    redis_url: str, redis_server: RedisServer
) -> None:
    """Pub/sub keeps nothing for a subscriber that is away: a directory write committed
    while the flusher was reconnecting never reaches it, so FreeSWITCH could keep serving
    the old user (its old password) from its cache."""
    sent: list[tuple[str, str]] = []
    stop = threading.Event()
    flusher = ChangeFlusher(redis_url, sent.extend, stop)
    flusher.start()
    try:
        until(flusher.subscribed.is_set, what="subscribed")
        redis_server.stop()
        until(lambda: not flusher.subscribed.is_set(), what="subscription lost")
        redis_server.start()
        until(flusher.subscribed.is_set, what="subscribed again")
        until(lambda: ("xml_flush_cache", "") in sent, timeout=5, what="a whole-cache flush")
    finally:
        stop.set()
        flusher.join(timeout=5)
