"""FreeSWITCH nodes shared across event-service replicas (``event_service.ingest.placement``):
12 fake nodes, 3 real replica processes. Each replica holds its share (4/4/4); one killed,
its nodes are taken by the two others (6/6) once its lease lapses; started again, the
shares are even again, and Redis equals what the FreeSWITCHes hold at every step."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cti import redis_keys
from event_service.ingest.placement import assign
from tests.eslserver import FakeFreeSwitch, call_events, stamped
from tests.events.helpers import until
from tests.redis_ha.services import event_service_process

NODES = 12
LEASE_SECONDS = 2.0
SETTLE = 60.0  # a generous deadline for a condition, not a timing claim


def test_assign_is_even_and_moves_little() -> None:
    nodes = [f"10.0.0.{i}:8021" for i in range(12)]
    three = assign(nodes, ["a", "b", "c"])
    assert sorted(Counter(three.values()).values()) == [4, 4, 4]
    assert assign(nodes, ["c", "a", "b"]) == three  # the order seen does not matter
    two = assign(nodes, ["a", "b"])
    assert sorted(Counter(two.values()).values()) == [6, 6]
    # c leaving: the nodes a and b held stay where they were
    assert all(two[n] == owner for n, owner in three.items() if owner != "c")
    five = assign(nodes, ["a", "b", "c", "d", "e"])
    assert max(Counter(five.values()).values()) == 3  # ceil(12 / 5)
    assert assign(nodes, []) == {}


class Deployment:
    """12 fake FreeSWITCHes, each with one registration and one call of its own."""

    def __init__(self) -> None:
        self.nodes = [FakeFreeSwitch().start() for _ in range(NODES)]
        self.registrations: set[str] = set()
        self.calls: set[str] = set()
        self.channels: list[dict[str, dict[str, str]]] = [{} for _ in self.nodes]
        for index in range(NODES):
            self.add_call(index, f"{4000 + index}")
            self.registrations.add(f"{3000 + index}")
            self._publish_state(index)

    def _publish_state(self, index: int) -> None:
        user = f"{3000 + index}@127.0.0.1"
        self.nodes[index].set_state(
            registrations={"internal": [{"user": user, "call-id": f"reg-{index}"}]},
            channels=[{"uuid": u, "callstate": "ACTIVE"} for u in self.channels[index]],
            dumps=self.channels[index],
        )

    def add_call(self, index: int, extension: str) -> list[dict[str, str]]:
        """A call of ``extension`` on node ``index`` (in its tables); its events."""
        channel = str(uuid.uuid4())
        events = call_events(channel, extension)
        dump = {k: v.replace("\n", " ") for k, v in events[1].items()}
        self.channels[index][channel] = {**dump, "Event-Name": "CHANNEL_DATA"}
        self.calls.add(extension)
        self._publish_state(index)
        return [stamped(e) for e in events[:2]]

    @property
    def esl_nodes(self) -> str:
        return ",".join(f"127.0.0.1:{fs.port}" for fs in self.nodes)

    def stop(self) -> None:
        for fs in self.nodes:
            fs.stop()


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    built = Deployment()
    yield built
    built.stop()


def holder_of(client: redis.Redis, fs: FakeFreeSwitch) -> str:
    value = client.get(redis_keys.node_lease(fs.address, "registrations"))
    return value.decode() if isinstance(value, bytes) else str(value or "")


def holders(client: redis.Redis, deployment: Deployment) -> Counter[int]:
    """Nodes per lease holder (by its process id: replica ids are ``host:pid:random``)."""
    counts: Counter[int] = Counter()
    for fs in deployment.nodes:
        holder = holder_of(client, fs)
        if holder:
            counts[int(holder.split(":")[1])] += 1
    return counts


def consumed_by_one_each(deployment: Deployment) -> bool:
    return all(fs.subscribed_clients() == 1 for fs in deployment.nodes)


def state_exact(client: redis.Redis, deployment: Deployment) -> bool:
    devices = client.hgetall(redis_keys.registration_devices("registrations"))
    one_device_each = all(len(json.loads(v)) == 1 for v in devices.values())
    return (
        set(client.hkeys("registrations")) == deployment.registrations
        and set(client.hkeys("calls")) == deployment.calls
        and all(
            json.loads(client.hget("calls", e) or "{}").get("activity") for e in deployment.calls
        )
        and one_device_each
    )


def shares(client: redis.Redis, deployment: Deployment, pids: list[int]) -> bool:
    counts = holders(client, deployment)
    even = NODES // len(pids)
    return sorted(counts) == sorted(pids) and all(counts[p] == even for p in pids)


def released(logs: list[Path]) -> int:
    return sum(log.read_text().count("released FreeSWITCH node") for log in logs)


def test_twelve_nodes_three_replicas_share_move_and_come_back(
    deployment: Deployment, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    events = {"lease_seconds": LEASE_SECONDS, "reconcile_interval": 0}
    logs: list[Path] = []
    with contextlib.ExitStack() as stack:

        def start() -> subprocess.Popen[bytes]:
            process, log = stack.enter_context(
                event_service_process(redis_url, deployment.esl_nodes, events=events)
            )
            logs.append(log)
            return process

        replicas = [start() for _ in range(3)]
        pids = [p.pid for p in replicas]
        until(lambda: shares(client, deployment, pids), SETTLE, "4/4/4")
        until(lambda: consumed_by_one_each(deployment), SETTLE, "one consumer per node")
        until(lambda: state_exact(client, deployment), SETTLE, "Redis equals FreeSWITCH")

        # kill one without any goodbye: its nodes move once its lease lapses
        dead = replicas.pop()
        dead_nodes = [fs for fs in deployment.nodes if f":{dead.pid}:" in holder_of(client, fs)]
        assert len(dead_nodes) == 4
        dead.kill()
        dead.wait()
        pids = [p.pid for p in replicas]
        until(lambda: shares(client, deployment, pids), SETTLE, "6/6")
        until(lambda: consumed_by_one_each(deployment), SETTLE, "one consumer per node")
        assert state_exact(client, deployment)

        # a call on a node that moved reaches Redis through its new owner
        index = deployment.nodes.index(dead_nodes[0])
        deployment.nodes[index].send_events(deployment.add_call(index, "4999"))
        until(lambda: state_exact(client, deployment), SETTLE, "the new call applied")

        # a replica starts again: shares are even again, moved nodes released cleanly
        released_before = released(logs[:2])
        replicas.append(start())
        pids = [p.pid for p in replicas]
        until(lambda: shares(client, deployment, pids), SETTLE, "4/4/4 again")
        until(lambda: consumed_by_one_each(deployment), SETTLE, "one consumer per node")
        until(lambda: state_exact(client, deployment), SETTLE, "Redis equals FreeSWITCH")
        assert state_exact(client, deployment)
        assert released(logs[:2]) - released_before >= 4  # the survivors handed it its share
    client.close()
