"""Call control across event-service replicas (``event_service.api.control_forward``): two real
replica processes, two fake FreeSWITCH nodes, each replica consuming one, a real Redis.
A call sent to the replica NOT holding the node reaches the right FreeSWITCH (the exact
command), answers as the holder does (OK, or its error unchanged), is checked again by the
holder (token and scopes), and is never forwarded twice."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from cti import redis_keys
from cti.api_errors import error_info
from cti.v1 import call_control_pb2 as pb
from cti.v1 import call_control_pb2_grpc
from event_service.api.control_forward import FORWARDED_HEADER
from event_service.ingest.placement import Membership
from event_service.ingest.state import ChannelRef
from tests.eslserver import FakeFreeSwitch
from tests.events.helpers import inbound_call_event, registration_event, until
from tests.redis_ha.services import event_service_process
from tests.support import free_port

TOKEN = "full-token"
TENANT = "tenant-token"
ONLY_FIRST = "known-to-the-first-replica-only"
A, B = "a.example", "b.example"
SETTLE = 60.0  # a generous deadline for a condition, not a timing claim


def auth(token: str = TOKEN) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    log: Path
    address: str
    stub: call_control_pb2_grpc.CallControlServiceStub

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Deployment:
    fs: list[FakeFreeSwitch]
    replicas: list[Replica]
    redis: redis.Redis

    def holder(self, node: int) -> Replica:
        """The replica whose lease holds ``node``."""
        value = self.redis.get(redis_keys.node_lease(self.fs[node].address, "registrations"))
        pid = int(str(value).split(":")[1])
        return next(r for r in self.replicas if r.pid == pid)

    def other(self, node: int) -> Replica:
        """The replica NOT holding ``node``."""
        holder = self.holder(node)
        return next(r for r in self.replicas if r is not holder)

    def replica_id(self, replica: Replica) -> str:
        members = self.redis.zrange(redis_keys.event_replicas("registrations"), 0, -1)
        return next(str(m) for m in members if int(str(m).split(":")[1]) == replica.pid)

    def start_call(self, node: int, uuid: str, user: str, domain: str) -> None:
        self.fs[node].send_event(inbound_call_event(uuid, user, domain))
        channels = redis_keys.call_channels("calls")
        until(lambda: self.redis.hexists(channels, uuid), SETTLE, "channel known")

    def register(self, node: int, user: str, domain: str) -> None:
        self.fs[node].send_event(registration_event(user, domain))
        devices = redis_keys.registration_devices("registrations")
        until(lambda: self.redis.hexists(devices, f"{user}@{domain}"), SETTLE, "registered")

    def jobs(self, node: int) -> list[str]:
        return [command for command, _ in self.fs[node].bgapi]


def _each_consumes_one(deployment: Deployment) -> bool:
    holders = []
    for fs in deployment.fs:
        value = deployment.redis.get(redis_keys.node_lease(fs.address, "registrations"))
        if not value or fs.subscribed_clients() != 1:
            return False
        holders.append(int(str(value).split(":")[1]))
    addresses = deployment.redis.hlen(redis_keys.event_replica_addresses("registrations"))
    return sorted(holders) == sorted(r.pid for r in deployment.replicas) and addresses == 2


@pytest.fixture
def deployment(redis_url: str) -> Iterator[Deployment]:
    """The first replica lets TENANT act on domain A only, the second on B only (a
    holder must apply its own scopes); only the first knows ONLY_FIRST."""
    with contextlib.ExitStack() as stack:
        fs = [FakeFreeSwitch().start(), FakeFreeSwitch().start()]
        for server in fs:
            stack.callback(server.stop)
            for command in ("uuid_kill", "uuid_hold", "originate"):
                server.api_replies[command] = "+OK\n"
        nodes = ",".join(server.address for server in fs)
        replicas = []
        for domain, extra in ((A, [ONLY_FIRST]), (B, [])):
            port = free_port()
            events = {
                "lease_seconds": 2,
                "reconcile_interval": 0,
                "registration_key": "extension@domain",
                "grpc": {
                    "tokens": [
                        TOKEN,
                        {"token": TENANT, "name": "tenant", "domains": [domain]},
                        *extra,
                    ]
                },
            }
            process, log = stack.enter_context(
                event_service_process(redis_url, nodes, grpc_port=port, events=events)
            )
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stack.callback(channel.close)
            stub = call_control_pb2_grpc.CallControlServiceStub(channel)
            replicas.append(Replica(process, log, f"127.0.0.1:{port}", stub))
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        stack.callback(client.close)
        built = Deployment(fs, replicas, client)
        until(lambda: _each_consumes_one(built), SETTLE, "each replica consuming one node")
        yield built


def logged(replica: Replica, key: str, value: str) -> bool:
    """The replica's audit log has a call-control line with ``key`` = ``value``."""
    return f'"{key}": "{value}"' in replica.log.read_text()


def failure(call: Any, request: Any, token: str = TOKEN) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=auth(token), timeout=30)
    return caught.value


def described(error: grpc.RpcError) -> tuple[Any, ...]:
    reason, metadata, violations = error_info(error)
    return error.code(), error.details(), reason, metadata, violations


CALLS = ["0b7b74e2-c831-4fcf-b4c2-07630968a707", "6c0bbabd-6dbc-475c-8e15-4bd7ecad8f53"]


def test_hangup_and_originate_sent_to_the_other_replica_reach_the_node(
    deployment: Deployment,
) -> None:
    for node in (0, 1):
        other, uuid = deployment.other(node), CALLS[node]
        deployment.start_call(node, uuid, f"100{node}", A)
        response = other.stub.Hangup(
            pb.HangupRequest(channel=f"channels/{uuid}"), metadata=auth(), timeout=30
        )
        assert response.node == deployment.fs[node].address
        assert response.channel == f"channels/{uuid}"
        assert response.reply == "+OK"
        assert deployment.jobs(node) == [f"uuid_kill {uuid} NORMAL_CLEARING"]
        holder = deployment.holder(node)
        for replica, end, peer in (
            (other, "forwarded_to", holder),
            (holder, "forwarded_by", other),
        ):
            until(functools.partial(logged, replica, end, deployment.replica_id(peer)), SETTLE, end)

        deployment.register(node, f"200{node}", A)
        request = pb.OriginateRequest(
            extension=f"domains/{A}/extensions/200{node}",
            destination="1001",
            request_id=f"crm-{node}",
        )
        dialled = other.stub.Originate(request, metadata=auth(), timeout=30)
        assert dialled.node == deployment.fs[node].address and not dialled.replayed
        command, job_uuid = deployment.fs[node].bgapi[-1]
        assert job_uuid == dialled.job_uuid
        assert command == (
            f"originate {{origination_uuid={dialled.uuid},originate_timeout=30,"
            f"cti_originate=true}}user/200{node}@{A} 1001 XML default"
        )
        # The request_id holds across replicas: a retry at either one dials nothing.
        for replica in deployment.replicas:
            again = replica.stub.Originate(request, metadata=auth(), timeout=30)
            assert again.replayed
            assert (again.uuid, again.job_uuid) == (dialled.uuid, dialled.job_uuid)
        assert len(deployment.jobs(node)) == 2
    assert deployment.jobs(0) != deployment.jobs(1)  # each command went to its own node only


def test_the_holders_errors_reach_the_client_unchanged(deployment: Deployment) -> None:
    node, uuid = 0, CALLS[0]
    holder, other = deployment.holder(node), deployment.other(node)
    deployment.start_call(node, uuid, "1000", A)
    deployment.fs[node].api_replies["uuid_kill"] = "-ERR No such channel!\n"
    deployment.fs[node].api_replies["uuid_hold"] = "-ERR Operation failed\n"
    cases = [
        ("Hangup", pb.HangupRequest, grpc.StatusCode.NOT_FOUND, "CHANNEL_NOT_FOUND"),
        ("Hold", pb.HoldRequest, grpc.StatusCode.FAILED_PRECONDITION, "FREESWITCH_ERROR"),
    ]
    replies = {"Hangup": "No such channel!", "Hold": "Operation failed"}
    for method, request_type, code, reason in cases:
        request = request_type(channel=f"channels/{uuid}")
        forwarded = described(failure(getattr(other.stub, method), request))
        assert (forwarded[0], forwarded[2]) == (code, reason)
        assert forwarded[3]["freeswitch_reply"] == replies[method]
        assert forwarded == described(failure(getattr(holder.stub, method), request))
    kill, held = f"uuid_kill {uuid} NORMAL_CLEARING", f"uuid_hold {uuid}"
    assert deployment.jobs(node) == [kill, kill, held, held]


def test_the_holder_checks_the_callers_token_again(deployment: Deployment) -> None:
    """The first replica lets TENANT act on A; the second does not: a call in A on the
    second one's node, sent to the first, is refused by the second."""
    first, second = deployment.replicas
    node = next(n for n in (0, 1) if deployment.holder(n) is second)
    uuid = CALLS[node]
    deployment.start_call(node, uuid, "1000", A)
    hangup = pb.HangupRequest(channel=f"channels/{uuid}")
    code, _, reason, metadata, _ = described(failure(first.stub.Hangup, hangup, TENANT))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "DOMAIN_NOT_ALLOWED")
    assert metadata == {"domain": A}
    code, _, reason, _, _ = described(failure(first.stub.Hangup, hangup, ONLY_FIRST))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
    assert deployment.jobs(node) == []
    # The same token is fine where the holder allows it.
    first.stub.Hangup(hangup, metadata=auth(), timeout=30)
    assert deployment.jobs(node) == [f"uuid_kill {uuid} NORMAL_CLEARING"]


def test_a_forwarded_call_is_never_forwarded_again(deployment: Deployment) -> None:
    """A node no replica consumes: held by nobody, UNAVAILABLE at once; its lease naming
    a replica whose address is the second replica's (so the second, were it to forward,
    would call itself forever): the second answers UNAVAILABLE, naming the forwarder."""
    first, second = deployment.replicas
    node, uuid = "127.0.0.1:1", "3f1c2a4e-0000-4000-8000-000000000001"
    ref = ChannelRef(node=node, key=f"1000@{A}", username="1000")
    deployment.redis.hset(redis_keys.call_channels("calls"), uuid, ref.to_json())
    hangup = pb.HangupRequest(channel=f"channels/{uuid}")

    code, message, reason, metadata, _ = described(failure(first.stub.Hangup, hangup))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "NODE_NOT_CONNECTED")
    assert "no event-service replica holds" in message
    assert metadata == {"node": node}

    deployment.redis.set(redis_keys.node_lease(node, "registrations"), "ghost")
    deployment.redis.hset(
        redis_keys.event_replica_addresses("registrations"), "ghost", second.address
    )
    code, message, reason, metadata, _ = described(failure(first.stub.Hangup, hangup))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "NODE_NOT_CONNECTED")
    assert metadata == {"node": node, "forwarded_by": deployment.replica_id(first)}
    # A client cannot make a replica forward: the marker only ever stops forwarding.
    with pytest.raises(grpc.RpcError) as caught:
        first.stub.Hangup(hangup, metadata=(*auth(), (FORWARDED_HEADER, "client")), timeout=30)
    assert error_info(caught.value)[1] == {"node": node, "forwarded_by": "client"}


def test_replicas_keep_their_address_beside_their_membership(client: redis.Redis) -> None:
    """Written with each heartbeat, removed on leave, and dropped with a member that
    expired (a replica that died without leaving)."""
    addresses = redis_keys.event_replica_addresses("registrations")

    def member(owner: str, advertise: str, seconds: float = 30.0) -> Membership:
        return Membership(
            client,
            owner,
            ["10.0.0.1:8021"],
            seconds,
            registration_hash="registrations",
            stop=threading.Event(),
            advertise=advertise,
        )

    first, second = member("r1", "10.0.0.1:50052"), member("r2", "")
    first.announce()
    second.announce()
    assert client.hgetall(addresses) == {"r1": "10.0.0.1:50052"}  # r2 advertises none
    first.leave()
    assert client.hgetall(addresses) == {}
    dead = member("r3", "10.0.0.3:50052", seconds=0.05)
    dead.announce()
    assert client.hget(addresses, "r3") == "10.0.0.3:50052"

    def expired() -> bool:
        second.announce()  # any replica's heartbeat drops the expired members
        return "r3" not in second.live

    until(expired, SETTLE, "r3 expired")
    assert client.hgetall(addresses) == {}
