"""The lease through a stall: a worker that cannot run for longer than ``lease_seconds``
keeps its node and its event socket, and loses no event; only a lease that another
replica actually holds ends consumption."""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections.abc import Iterator, Sequence

import pytest
import redis

from cti import redis_keys
from cti.config import EslNode
from event_service.ingest.state import Operation
from event_service.ingest.worker import NodeWorker
from tests.eslserver import FakeFreeSwitch, call_events, stamped
from tests.events.helpers import settings, subscriptions, until
from tests.redis_ha.services import event_service_process


def send_calls(fs: FakeFreeSwitch, count: int, extension: str = "1000") -> None:
    """``count`` whole calls (create, answer, hangup): three state changes each."""
    for _ in range(count):
        fs.send_events([stamped(e) for e in call_events(str(uuid.uuid4()), extension)])


def logged_call_changes(client: redis.Redis) -> int:
    entries: Sequence[tuple[str, dict[str, str]]] = client.xrange(redis_keys.EVENTS_LOG_STREAM)  # type: ignore[assignment]
    return sum(1 for _, fields in entries if fields["kind"] == "call")


def test_a_stopped_process_keeps_its_node_and_loses_no_event(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    """SIGSTOP for longer than the lease: the key expires meanwhile, nobody else holds it,
    so after SIGCONT the same replica takes it back and reads on from the same socket."""
    lease_key = redis_keys.node_lease(fs.address, "registrations")
    with event_service_process(redis_url, fs.address, events={"lease_seconds": 1}) as (
        process,
        log,
    ):
        fs.wait_subscribed(timeout=30)
        owner = until(lambda: client.get(lease_key), what="lease taken")
        send_calls(fs, 20)
        until(lambda: logged_call_changes(client) == fs.sent, timeout=30, what="first calls")
        os.kill(process.pid, signal.SIGSTOP)
        try:
            send_calls(fs, 20)  # queued in the socket while the process cannot run
            until(lambda: client.get(lease_key) is None, timeout=30, what="lease lapsed")
            send_calls(fs, 20)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        until(lambda: logged_call_changes(client) == fs.sent, timeout=60, what="every event")
        until(lambda: client.get(lease_key) == owner, what="lease held again by the same replica")
        text = log.read_text()
    assert fs.sent == 180
    assert logged_call_changes(client) == 180
    assert subscriptions(fs) == 1  # the event socket was never dropped
    assert "another replica" not in text
    record = client.hget("calls", "1000") or ""
    assert '"activity": []' in record and '"notify": "hangup"' in record


@pytest.fixture
def worker_of(fs: FakeFreeSwitch, redis_url: str) -> Iterator[tuple[NodeWorker, threading.Event]]:
    stop = threading.Event()
    connection = redis.Redis.from_url(redis_url)
    node = EslNode("127.0.0.1", fs.port)
    running = NodeWorker(node, settings((node,), lease_seconds=0.6), connection, "replica-a", stop)
    running.start()
    yield running, stop
    stop.set()
    running.join(timeout=10)
    connection.close()


def test_a_blocked_read_loop_keeps_its_lease(
    fs: FakeFreeSwitch, client: redis.Redis, worker_of: tuple[NodeWorker, threading.Event]
) -> None:
    """The loop that applies events is stuck (a slow Redis, a long batch): the lease is
    renewed by its own thread meanwhile."""
    running, _ = worker_of
    until(running.connected.is_set, what="connected")
    apply = running.store.apply
    stuck, release = threading.Event(), threading.Event()

    def blocked_apply(ops: Sequence[Operation]) -> int:
        stuck.set()
        release.wait(30)
        return apply(ops)

    running.store.apply = blocked_apply  # type: ignore[method-assign,assignment]
    send_calls(fs, 5)
    until(stuck.is_set, what="loop blocked")
    threading.Event().wait(3 * 0.6)  # three lease lifetimes pass while it is blocked
    lease_key = running.lease.key
    assert client.get(lease_key) == "replica-a"
    release.set()
    send_calls(fs, 5)
    until(lambda: logged_call_changes(client) == fs.sent, what="every event")
    assert subscriptions(fs) == 1


def test_a_lease_held_by_another_replica_ends_consumption(
    fs: FakeFreeSwitch,
    client: redis.Redis,
    worker_of: tuple[NodeWorker, threading.Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    running, _ = worker_of
    until(running.connected.is_set, what="connected")
    caplog.set_level(logging.INFO)
    client.set(running.lease.key, "replica-b", px=60_000)
    until(lambda: not running.connected.is_set(), what="consumption stopped")
    until(lambda: fs.subscribed_clients() == 0, what="socket closed")
    said = [r.getMessage() for r in caplog.records if "another replica" in r.getMessage()]
    assert said == ["lease held by another replica (replica-b): stopped consuming this node"]
    send_calls(fs, 1)
    assert client.get(running.lease.key) == "replica-b"
    assert logged_call_changes(client) == 0
