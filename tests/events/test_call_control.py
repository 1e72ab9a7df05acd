"""The call-control API end to end: two fake FreeSWITCH nodes, their node workers, a real
Redis and the event service's gRPC server on loopback. Checks the exact command each RPC
sends, FreeSWITCH's errors, routing, idempotent retries, token scopes and the call state
that follows control (``callout`` for an originated leg, fields after bridge/transfer)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import pytest
import redis

from cti import redis_keys
from cti.api_errors import error_info
from cti.config import EslNode, GrpcSettings, Settings, TokenScope, parse_settings
from cti.v1 import call_control_pb2 as pb
from cti.v1 import call_control_pb2_grpc, events_pb2, events_pb2_grpc
from event_service.app import create_grpc_server
from event_service.ingest.control_jobs import Job, JobQueue
from event_service.ingest.worker import NodeWorker
from tests.eslserver import FakeFreeSwitch
from tests.events.helpers import SEED_FIELDS, inbound_call_event, registration_event, until
from tests.support import free_port

ControlStub = call_control_pb2_grpc.CallControlServiceStub
TOKEN = "full-token"
TENANT_B = "tenant-b-token"
READER = "reader-token"
A, B = "a.example", "b.example"
CALL = "0b7b74e2-c831-4fcf-b4c2-07630968a707"
CALL_B = "6c0bbabd-6dbc-475c-8e15-4bd7ecad8f53"


def auth(token: str = TOKEN) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Cluster:
    fs: list[FakeFreeSwitch]
    workers: list[NodeWorker]
    stub: call_control_pb2_grpc.CallControlServiceStub
    events: events_pb2_grpc.EventServiceStub
    redis: redis.Redis
    settings: Settings

    def register(self, node: int, user: str, domain: str) -> None:
        self.fs[node].send_event(registration_event(user, domain))
        devices = redis_keys.registration_devices("registrations")
        until(lambda: self.redis.hexists(devices, f"{user}@{domain}"), what="registered")

    def channel_event(self, node: int, name: str, uuid: str, **headers: str) -> None:
        self.fs[node].send_event({"Event-Name": name, "Unique-ID": uuid, **headers})

    def start_call(self, node: int, uuid: str, user: str, domain: str) -> None:
        """An inbound call from ``user`` (its A-leg) on ``node``."""
        self.fs[node].send_event(inbound_call_event(uuid, user, domain))
        channels = redis_keys.call_channels("calls")
        until(lambda: self.redis.hexists(channels, uuid), what="channel known")

    def record(self, key: str) -> dict[str, Any]:
        raw = self.redis.hget("calls", key)
        return json.loads(raw) if raw else {}

    def jobs(self, node: int) -> list[str]:
        return [command for command, _ in self.fs[node].bgapi]


def _settings(redis_url: str, port: int, nodes: tuple[EslNode, ...]) -> Settings:
    base = parse_settings("{}")
    grpc_settings = GrpcSettings(
        f"127.0.0.1:{port}",
        tokens=(TOKEN, TENANT_B, READER),
        scopes={
            TENANT_B: TokenScope("tenant-b", domains=(B,)),
            READER: TokenScope("reader", read_only=True),
        },
    )
    events = replace(
        base.events,
        grpc=grpc_settings,
        nodes=nodes,
        key_with_domain=True,
        call=replace(base.events.call, fields=SEED_FIELDS),
        control=replace(base.events.control, recordings_dir="/var/rec", variables=("crm_*",)),
    )
    return replace(base, redis_url=redis_url, events=events)


@pytest.fixture
def cluster(redis_url: str) -> Iterator[Cluster]:
    with ExitStack() as stack:
        fs = [FakeFreeSwitch().start(), FakeFreeSwitch().start()]
        for server in fs:
            stack.callback(server.stop)
        nodes = tuple(EslNode("127.0.0.1", server.port) for server in fs)
        port = free_port()
        settings = _settings(redis_url, port, nodes)
        stop = threading.Event()
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        workers = [NodeWorker(n, settings.events, client, "replica-a", stop) for n in nodes]
        for worker in workers:
            worker.start()

        def stop_workers() -> None:
            stop.set()
            for worker in workers:
                worker.join(timeout=10)

        stack.callback(stop_workers)
        for worker in workers:
            until(worker.connected.is_set, what="worker connected")
        server = create_grpc_server(settings, client, links={w.address: w for w in workers})
        server.start()
        stack.callback(lambda: server.stop(0).wait())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stack.callback(channel.close)
        for each in fs:
            for command in ("uuid_kill", "uuid_transfer", "uuid_record", "originate"):
                each.api_replies[command] = "+OK\n"
            each.api_replies["uuid_hold"] = "+OK Success\n"
            each.api_replies["uuid_send_dtmf"] = lambda cmd: f"+OK {cmd.split()[1]} sent DTMF.\n"
        yield Cluster(
            fs,
            workers,
            call_control_pb2_grpc.CallControlServiceStub(channel),
            events_pb2_grpc.EventServiceStub(channel),
            client,
            settings,
        )


def failure(call: Any, *args: Any, token: str = TOKEN, **kwargs: Any) -> tuple[Any, str, dict]:  # type: ignore[type-arg]
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, metadata=auth(token), timeout=10, **kwargs)
    reason, metadata, _ = error_info(caught.value)
    return caught.value.code(), reason, metadata


# -- the exact command of each method -----------------------------------------------------

CHANNEL = f"channels/{CALL}"
EXACT = [
    ("Hangup", pb.HangupRequest(channel=CHANNEL), f"uuid_kill {CALL} NORMAL_CLEARING", "+OK"),
    (
        "Hangup",
        pb.HangupRequest(channel=CHANNEL, cause="USER_BUSY"),
        f"uuid_kill {CALL} USER_BUSY",
        "+OK",
    ),
    (
        "Transfer",
        pb.TransferRequest(channel=CHANNEL, destination="1002"),
        f"uuid_transfer {CALL} 1002 XML default",
        "+OK",
    ),
    (
        "Transfer",
        pb.TransferRequest(
            channel=CHANNEL, destination="*98", context="sales", leg=pb.TransferRequest.LEG_BRIDGED
        ),
        f"uuid_transfer {CALL} -bleg *98 XML sales",
        "+OK",
    ),
    ("Hold", pb.HoldRequest(channel=CHANNEL), f"uuid_hold {CALL}", "+OK Success"),
    ("Unhold", pb.UnholdRequest(channel=CHANNEL), f"uuid_hold off {CALL}", "+OK Success"),
    (
        "StartRecording",
        pb.StartRecordingRequest(channel=CHANNEL, path="2026/a.wav", max_seconds=60),
        f"uuid_record {CALL} start /var/rec/2026/a.wav 60",
        "+OK",
    ),
    (
        "StartRecording",
        pb.StartRecordingRequest(channel=CHANNEL),
        f"uuid_record {CALL} start /var/rec/{CALL}.wav",
        "+OK",
    ),
    (
        "StopRecording",
        pb.StopRecordingRequest(channel=CHANNEL),
        f"uuid_record {CALL} stop all",
        "+OK",
    ),
    (
        "SendDtmf",
        pb.SendDtmfRequest(channel=CHANNEL, digits="12#w3"),
        f"uuid_send_dtmf {CALL} 12#w3",
        f"+OK {CALL} sent DTMF.",
    ),
]


@pytest.mark.parametrize(("method", "request_message", "command", "reply"), EXACT)
def test_each_method_sends_its_command_and_returns_the_job_result(
    cluster: Cluster, method: str, request_message: Any, command: str, reply: str
) -> None:
    cluster.start_call(0, CALL, "1000", A)
    response = getattr(cluster.stub, method)(request_message, metadata=auth(), timeout=10)
    assert cluster.jobs(0) == [command]
    assert cluster.jobs(1) == []
    assert f"bgapi {command}" in cluster.fs[0].commands
    assert response.reply == reply
    assert response.node == cluster.fs[0].address
    assert response.channel == CHANNEL


def test_freeswitch_err_becomes_a_status_with_its_reason(cluster: Cluster) -> None:
    cluster.start_call(0, CALL, "1000", A)
    cluster.fs[0].api_replies["uuid_hold"] = "-ERR Operation failed\n"
    code, reason, metadata = failure(cluster.stub.Hold, pb.HoldRequest(channel=CHANNEL))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert reason == "FREESWITCH_ERROR"
    assert metadata["freeswitch_reply"] == "Operation failed"
    cluster.fs[0].api_replies["uuid_kill"] = "-ERR No such channel!\n"
    code, reason, metadata = failure(cluster.stub.Hangup, pb.HangupRequest(channel=CHANNEL))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CHANNEL_NOT_FOUND")
    assert metadata["freeswitch_reply"] == "No such channel!"


def test_unknown_channel_is_not_found_and_nothing_is_sent(cluster: Cluster) -> None:
    code, reason, _ = failure(cluster.stub.Hangup, pb.HangupRequest(channel=CHANNEL))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CHANNEL_NOT_FOUND")
    assert cluster.jobs(0) == cluster.jobs(1) == []


def test_no_job_result_within_the_deadline(cluster: Cluster) -> None:
    cluster.start_call(0, CALL, "1000", A)
    cluster.fs[0].hold_jobs = True
    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.Hold(pb.HoldRequest(channel=CHANNEL), metadata=auth(), timeout=1.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert cluster.jobs(0) == [f"uuid_hold {CALL}"]
    cluster.fs[0].release_jobs()  # a late result for nobody is dropped, not misassigned
    cluster.fs[0].hold_jobs = False
    response = cluster.stub.Unhold(pb.UnholdRequest(channel=CHANNEL), metadata=auth(), timeout=10)
    assert response.reply == "+OK Success"


def test_a_client_that_leaves_frees_its_wait(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled with a long deadline and no result coming: the call ends at once (its
    thread is not held until the deadline), and a late result is dropped."""
    cluster.start_call(0, CALL, "1000", A)
    cluster.fs[0].hold_jobs = True
    with caplog.at_level("INFO", logger="event_service.api.control"):
        pending = cluster.stub.Hold.future(
            pb.HoldRequest(channel=CHANNEL), metadata=auth(), timeout=300
        )
        until(lambda: cluster.jobs(0), what="the job sent")
        pending.cancel()
        until(
            lambda: [r for r in caplog.records if r.getMessage() == "call control"],
            timeout=30,
            what="the cancelled call ended (not at its 300 s deadline)",
        )
    cluster.fs[0].release_jobs()
    cluster.fs[0].hold_jobs = False
    response = cluster.stub.Unhold(pb.UnholdRequest(channel=CHANNEL), metadata=auth(), timeout=10)
    assert response.reply == "+OK Success"


INJECTIONS = [
    ("Hangup", pb.HangupRequest(channel=f"channels/{CALL}\nbgapi system id"), "channel"),
    ("Hangup", pb.HangupRequest(channel=CHANNEL, cause="NORMAL_CLEARING\nbgapi x"), "cause"),
    ("Transfer", pb.TransferRequest(channel=CHANNEL, destination="1002 XML evil"), "destination"),
    ("Transfer", pb.TransferRequest(channel=CHANNEL, destination="${system(id)}"), "destination"),
    (
        "Transfer",
        pb.TransferRequest(channel=CHANNEL, destination="1002", context="x\r\nbgapi y"),
        "context",
    ),
    ("SendDtmf", pb.SendDtmfRequest(channel=CHANNEL, digits="1 2"), "digits"),
    ("StartRecording", pb.StartRecordingRequest(channel=CHANNEL, path="../x.wav"), "path"),
    ("StartRecording", pb.StartRecordingRequest(channel=CHANNEL, path="/etc/x.wav"), "path"),
    (
        "Originate",
        pb.OriginateRequest(extension=f"domains/{A}/extensions/1000", destination="1\nbgapi x"),
        "destination",
    ),
    (
        "Originate",
        pb.OriginateRequest(
            extension=f"domains/{A}/extensions/1000", destination="1001", caller_id_name="a}b"
        ),
        "caller_id_name",
    ),
    (
        "Originate",
        pb.OriginateRequest(extension=f"domains/{A}/extensions/1000,user/666", destination="1001"),
        "extension",
    ),
    (
        "Originate",
        pb.OriginateRequest(
            extension=f"domains/{A}/extensions/1000",
            destination="1001",
            variables={"origination_uuid": CALL_B},
        ),
        "variables['origination_uuid']",
    ),
    (
        "Originate",
        pb.OriginateRequest(
            extension=f"domains/{A}/extensions/1000",
            destination="1001",
            variables={"crm_x": "a,b}\nbgapi y"},
        ),
        "variables['crm_x']",
    ),
    # Well-formed, but FreeSWITCH would run it as an API command when the leg answers:
    # only the variables events.control.variables lists may be set.
    (
        "Originate",
        pb.OriginateRequest(
            extension=f"domains/{A}/extensions/1000",
            destination="1001",
            variables={"api_on_answer": "system touch /tmp/pwned"},
        ),
        "variables['api_on_answer']",
    ),
    (
        "Originate",
        pb.OriginateRequest(
            extension=f"domains/{A}/extensions/1000",
            destination="1001",
            variables={"execute_on_answer": "transfer 9999 XML internal"},
        ),
        "variables['execute_on_answer']",
    ),
    # uuid_transfer would read "-both" as its flag and shift the other arguments.
    ("Transfer", pb.TransferRequest(channel=CHANNEL, destination="-both"), "destination"),
]


@pytest.mark.parametrize(("method", "request_message", "field"), INJECTIONS)
def test_injection_attempts_are_refused_and_nothing_is_sent(
    cluster: Cluster, method: str, request_message: Any, field: str
) -> None:
    cluster.start_call(0, CALL, "1000", A)
    cluster.register(0, "1000", A)
    with pytest.raises(grpc.RpcError) as caught:
        getattr(cluster.stub, method)(request_message, metadata=auth(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, _, violations = error_info(caught.value)
    assert [v[0] for v in violations] == [field]
    assert cluster.jobs(0) == cluster.jobs(1) == []


# -- routing ------------------------------------------------------------------------------


def test_commands_go_to_the_node_holding_the_channel(cluster: Cluster) -> None:
    cluster.start_call(0, CALL, "1000", A)
    cluster.start_call(1, CALL_B, "2000", A)
    cluster.stub.Hangup(pb.HangupRequest(channel=f"channels/{CALL_B}"), metadata=auth())
    cluster.stub.Hold(pb.HoldRequest(channel=CHANNEL), metadata=auth())
    assert cluster.jobs(0) == [f"uuid_hold {CALL}"]
    assert cluster.jobs(1) == [f"uuid_kill {CALL_B} NORMAL_CLEARING"]


def test_a_node_not_connected_is_unavailable(cluster: Cluster) -> None:
    cluster.start_call(1, CALL_B, "2000", A)
    cluster.fs[1].stop()
    until(lambda: not cluster.workers[1].connected.is_set(), what="node b gone")
    code, reason, metadata = failure(
        cluster.stub.Hangup, pb.HangupRequest(channel=f"channels/{CALL_B}")
    )
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "NODE_NOT_CONNECTED")
    assert metadata["node"] == cluster.fs[1].address


# -- Originate ----------------------------------------------------------------------------


def _originate(**fields: Any) -> pb.OriginateRequest:
    values: dict[str, Any] = {"extension": f"domains/{A}/extensions/1000", "destination": "1001"}
    values.update(fields)
    return pb.OriginateRequest(**values)


def test_originate_rings_the_extension_on_its_node_and_returns_at_once(cluster: Cluster) -> None:
    cluster.register(1, "1000", A)
    cluster.fs[1].hold_jobs = True  # the call has not been answered: the reply comes anyway
    response = cluster.stub.Originate(
        _originate(caller_id_name="Click to dial", ring_timeout_seconds=20, auto_answer=True),
        metadata=auth(),
        timeout=10,
    )
    assert response.node == cluster.fs[1].address
    assert response.channel == f"channels/{response.uuid}"
    ((command, job_uuid),) = cluster.fs[1].bgapi
    assert job_uuid == response.job_uuid
    assert command == (
        f"originate {{origination_uuid={response.uuid},originate_timeout=20,"
        "cti_originate=true,sip_auto_answer=true,origination_caller_id_name=Click\\sto\\sdial}"
        f"user/1000@{A} 1001 XML default"
    )
    assert cluster.jobs(0) == []


def test_originate_sets_the_variables_the_server_allows(cluster: Cluster) -> None:
    cluster.register(0, "1000", A)
    response = cluster.stub.Originate(
        _originate(variables={"crm_ticket": "T 42"}), metadata=auth(), timeout=10
    )
    assert cluster.jobs(0) == [
        f"originate {{crm_ticket=T\\s42,origination_uuid={response.uuid},originate_timeout=30,"
        f"cti_originate=true}}user/1000@{A} 1001 XML default"
    ]


def test_originate_of_an_unregistered_extension_is_not_found(cluster: Cluster) -> None:
    code, reason, _ = failure(cluster.stub.Originate, _originate())
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "EXTENSION_NOT_REGISTERED")


def test_originate_retry_with_the_same_request_id_dials_once(cluster: Cluster) -> None:
    cluster.register(0, "1000", A)
    first = cluster.stub.Originate(_originate(request_id="crm-42"), metadata=auth())
    again = cluster.stub.Originate(_originate(request_id="crm-42"), metadata=auth())
    assert (again.uuid, again.node, again.job_uuid) == (first.uuid, first.node, first.job_uuid)
    assert again.replayed and not first.replayed
    assert len(cluster.jobs(0)) == 1
    code, reason, _ = failure(
        cluster.stub.Originate, _originate(request_id="crm-42", destination="1002")
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    other = cluster.stub.Originate(_originate(request_id="crm-43"), metadata=auth())
    assert other.uuid != first.uuid and len(cluster.jobs(0)) == 2
    key = redis_keys.control_request("calls", "full-access", "crm-42")
    assert 0 < cluster.redis.ttl(key) <= 600


def test_request_ids_are_per_token(cluster: Cluster) -> None:
    """One caller's request ids neither block nor answer another's (a tenant cannot
    squat on ids such as crm-42 that another client will use)."""
    cluster.register(0, "1000", A)
    cluster.register(0, "1000", B)
    tenant = cluster.stub.Originate(
        _originate(extension=f"domains/{B}/extensions/1000", request_id="crm-7"),
        metadata=auth(TENANT_B),
        timeout=10,
    )
    mine = cluster.stub.Originate(_originate(request_id="crm-7"), metadata=auth(), timeout=10)
    assert not mine.replayed and mine.uuid != tenant.uuid
    assert len(cluster.jobs(0)) == 2


def test_a_request_id_whose_dial_failed_can_be_retried(cluster: Cluster) -> None:
    cluster.register(1, "1000", A)
    cluster.fs[1].stop()
    until(lambda: not cluster.workers[1].connected.is_set(), what="node b gone")
    code, reason, _ = failure(cluster.stub.Originate, _originate(request_id="r-1"))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "NODE_NOT_CONNECTED")
    assert cluster.redis.get(redis_keys.control_request("calls", "full-access", "r-1")) is None


class _HandedOut(JobQueue):
    """A node whose worker takes each job at once (it went out on the socket) and never
    gets FreeSWITCH's reply: the command may or may not have run."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[Job] = []

    def put(self, job: Job) -> None:
        super().put(job)
        taken = self.next_to_send()
        assert taken is job
        self.taken.append(job)


@dataclass
class _StalledLink:
    address: str
    jobs: JobQueue
    connected: threading.Event = field(default_factory=threading.Event)


@contextmanager
def _stalled_node(
    cluster: Cluster, jobs: JobQueue
) -> Iterator[call_control_pb2_grpc.CallControlServiceStub]:
    """Another event-service gRPC server whose link to node 0 never answers a job."""
    link = _StalledLink(cluster.fs[0].address, jobs)
    link.connected.set()
    port = free_port()
    events = cluster.settings.events
    settings = replace(
        cluster.settings,
        events=replace(events, grpc=replace(events.grpc, listen=f"127.0.0.1:{port}")),
    )
    server = create_grpc_server(settings, cluster.redis, links={link.address: link})
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield call_control_pb2_grpc.CallControlServiceStub(channel)
    finally:
        server.stop(0).wait()


def test_an_originate_that_may_have_gone_out_keeps_its_request_id(cluster: Cluster) -> None:
    """The deadline passed after the command went to FreeSWITCH: it may ring, so a retry
    must not dial again (it gets the first uuid)."""
    cluster.register(0, "1000", A)
    jobs = _HandedOut()
    with _stalled_node(cluster, jobs) as stub:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Originate(_originate(request_id="r-2"), metadata=auth(), timeout=1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        again = stub.Originate(_originate(request_id="r-2"), metadata=auth(), timeout=10)
    assert again.replayed
    assert again.job_uuid == jobs.taken[0].job_uuid
    assert f"origination_uuid={again.uuid}," in jobs.taken[0].command.argument
    assert len(jobs.taken) == 1


def test_an_originate_never_sent_before_its_deadline_releases_its_request_id(
    cluster: Cluster,
) -> None:
    cluster.register(0, "1000", A)
    jobs = JobQueue()  # nobody takes the job: it is still queued at the deadline
    with _stalled_node(cluster, jobs) as stub, pytest.raises(grpc.RpcError) as caught:
        stub.Originate(_originate(request_id="r-3"), metadata=auth(), timeout=1)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert cluster.redis.get(redis_keys.control_request("calls", "full-access", "r-3")) is None
    assert jobs.next_to_send() is None  # withdrawn: it will never be sent


def test_a_request_id_still_being_dialled_is_not_replayed(cluster: Cluster) -> None:
    """Two identical requests at once: the second neither dials nor claims a uuid that
    may never ring (the first may still fail); it is told to retry."""
    cluster.register(0, "1000", A)
    jobs = _HandedOut()
    with _stalled_node(cluster, jobs) as stub:
        first = stub.Originate.future(_originate(request_id="r-4"), metadata=auth(), timeout=30)
        until(lambda: jobs.taken, what="the first request's job sent")
        with pytest.raises(grpc.RpcError) as caught:
            stub.Originate(_originate(request_id="r-4"), metadata=auth(), timeout=10)
        first.cancel()
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert error_info(caught.value)[0] == "REQUEST_IN_PROGRESS"
    assert len(jobs.taken) == 1


class CallsWatch:
    """A Watch of the calls, as a desk client runs it: every change, in order, as
    (name, notify, the current call's Caller-Callee-ID-Number)."""

    def __init__(self, stub: events_pb2_grpc.EventServiceStub) -> None:
        request = events_pb2.WatchRequest(kinds=[events_pb2.WATCH_KIND_EXTENSION_CALLS])
        self.call = stub.Watch(request, metadata=auth())
        self.seen: list[tuple[str, str, str]] = []
        self.live = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        until(self.live.is_set, what="the Watch snapshot")

    def _follow(self) -> None:
        try:
            for response in self.call:
                for event in response.events:
                    if event.type == events_pb2.WatchEvent.TYPE_SNAPSHOT_COMPLETE:
                        self.live.set()
                    elif event.type == events_pb2.WatchEvent.TYPE_UPSERT:
                        record = event.extension_calls
                        current = [c for c in record.calls if c.uuid == record.current]
                        callee = (
                            current[0].fields.get("Caller-Callee-ID-Number", "") if current else ""
                        )
                        self.seen.append((event.name, record.notify, callee))
        except grpc.RpcError:
            return  # cancelled at the end of the test

    def states(self, name: str) -> list[tuple[str, str]]:
        """The (notify, callee) steps of one extension, repeats folded."""
        steps: list[tuple[str, str]] = []
        for seen_name, notify, callee in list(self.seen):
            if seen_name == name and (not steps or steps[-1] != (notify, callee)):
                steps.append((notify, callee))
        return steps


def test_click_to_dial_state_from_ringing_to_hangup(cluster: Cluster) -> None:
    """The agent's leg is a ``callout``; after the bridge it names the party it is
    connected to (CHANNEL_BRIDGE / CALL_UPDATE update the fields). A Watch client sees
    both legs from ringing to hang-up, with the right parties."""
    cluster.register(0, "1000", A)
    cluster.register(0, "1001", A)
    watch = CallsWatch(cluster.events)
    leg = cluster.stub.Originate(_originate(), metadata=auth()).uuid
    b_leg = CALL_B
    agent = {
        "Call-Direction": "outbound",
        "variable_dialed_user": "1000",
        "variable_dialed_domain": A,
        "variable_cti_originate": "true",
        "Caller-Destination-Number": "1000",
        "Caller-Callee-ID-Number": "1000",
    }
    cluster.channel_event(0, "CHANNEL_CREATE", leg, **agent)
    until(lambda: cluster.record(f"1000@{A}").get("notify") == "callout", what="ringing")
    cluster.channel_event(0, "CHANNEL_ANSWER", leg, **agent, **{"Answer-State": "answered"})
    callee = {
        "Call-Direction": "outbound",
        "variable_dialed_user": "1001",
        "variable_dialed_domain": A,
        "Caller-Destination-Number": "1001",
    }
    cluster.channel_event(0, "CHANNEL_CREATE", b_leg, **callee)
    until(lambda: cluster.record(f"1001@{A}").get("notify") == "callin", what="callee rings")
    bridged = dict(agent, **{"Answer-State": "answered", "Caller-Callee-ID-Number": "1001"})
    cluster.channel_event(0, "CHANNEL_BRIDGE", leg, **bridged)
    until(
        lambda: cluster.record(f"1000@{A}").get(leg, {}).get("Caller-Callee-ID-Number") == "1001",
        what="agent's record names the callee",
    )
    assert cluster.record(f"1000@{A}")["notify"] == "answer"
    for uuid, headers in ((b_leg, callee), (leg, bridged)):  # as FreeSWITCH has them now
        cluster.channel_event(0, "CHANNEL_HANGUP_COMPLETE", uuid, **headers)
    until(lambda: cluster.record(f"1000@{A}").get("notify") == "hangup", what="hung up")
    until(lambda: cluster.record(f"1001@{A}").get("notify") == "hangup", what="hung up")
    agent_steps = [("callout", "1000"), ("answer", "1000"), ("answer", "1001"), ("hangup", "1001")]
    until(lambda: watch.states(f"calls/1000@{A}") == agent_steps, what="the agent's leg watched")
    callee_steps = [("callin", ""), ("hangup", "")]
    until(lambda: watch.states(f"calls/1001@{A}") == callee_steps, what="the callee watched")
    watch.call.cancel()


def test_after_a_transfer_the_remaining_party_names_the_new_one(cluster: Cluster) -> None:
    cluster.start_call(0, CALL, "1000", A)
    cluster.stub.Transfer(
        pb.TransferRequest(channel=CHANNEL, destination="1002", leg=pb.TransferRequest.LEG_BRIDGED),
        metadata=auth(),
    )
    caller = {
        "Call-Direction": "inbound",
        "variable_user_name": "1000",
        "variable_domain_name": A,
        "Answer-State": "answered",
        "Caller-Destination-Number": "1002",
        "Caller-Callee-ID-Number": "1002",
    }
    cluster.channel_event(0, "CALL_UPDATE", CALL, **caller)
    until(
        lambda: (
            cluster.record(f"1000@{A}").get(CALL, {}).get("Caller-Destination-Number") == "1002"
        ),
        what="destination updated",
    )
    assert cluster.record(f"1000@{A}")[CALL]["Caller-Callee-ID-Number"] == "1002"


# -- Eavesdrop ----------------------------------------------------------------------------


def test_eavesdrop_calls_the_supervisor_on_the_channels_node(cluster: Cluster) -> None:
    cluster.start_call(0, CALL, "1000", A)
    cluster.register(0, "2000", A)
    response = cluster.stub.Eavesdrop(
        pb.EavesdropRequest(
            channel=CHANNEL,
            supervisor=f"domains/{A}/extensions/2000",
            mode=pb.EavesdropRequest.MODE_WHISPER,
        ),
        metadata=auth(),
    )
    assert cluster.jobs(0) == [
        f"originate {{origination_uuid={response.uuid},originate_timeout=30,"
        "cti_originate=true,eavesdrop_enable_dtmf=false,"
        f"eavesdrop_whisper_aleg=true}}user/2000@{A} &eavesdrop({CALL})"
    ]


def test_eavesdrop_across_nodes_is_refused(cluster: Cluster) -> None:
    cluster.start_call(0, CALL, "1000", A)
    cluster.register(1, "2000", A)
    code, reason, _ = failure(
        cluster.stub.Eavesdrop,
        pb.EavesdropRequest(channel=CHANNEL, supervisor=f"domains/{A}/extensions/2000"),
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "DIFFERENT_NODES")
    assert cluster.jobs(0) == cluster.jobs(1) == []


# -- token scopes -------------------------------------------------------------------------


def test_a_tenant_token_acts_only_on_its_domain(cluster: Cluster) -> None:
    cluster.start_call(0, CALL, "1000", A)
    cluster.start_call(0, CALL_B, "1000", B)
    cluster.register(0, "1000", A)
    code, reason, _ = failure(
        cluster.stub.Hangup, pb.HangupRequest(channel=CHANNEL), token=TENANT_B
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "DOMAIN_NOT_ALLOWED")
    code, reason, _ = failure(cluster.stub.Originate, _originate(), token=TENANT_B)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "DOMAIN_NOT_ALLOWED")
    assert cluster.jobs(0) == []
    cluster.stub.Hangup(pb.HangupRequest(channel=f"channels/{CALL_B}"), metadata=auth(TENANT_B))
    assert cluster.jobs(0) == [f"uuid_kill {CALL_B} NORMAL_CLEARING"]


def test_a_tenant_token_cannot_listen_to_another_tenants_call(cluster: Cluster) -> None:
    cluster.start_call(0, CALL, "1000", A)
    cluster.register(0, "2000", A)
    cluster.register(0, "2000", B)
    for supervisor in (f"domains/{B}/extensions/2000", f"domains/{A}/extensions/2000"):
        code, reason, _ = failure(
            cluster.stub.Eavesdrop,
            pb.EavesdropRequest(channel=CHANNEL, supervisor=supervisor),
            token=TENANT_B,
        )
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "DOMAIN_NOT_ALLOWED")
    for method, request in (
        ("Transfer", pb.TransferRequest(channel=CHANNEL, destination="1002")),
        ("StartRecording", pb.StartRecordingRequest(channel=CHANNEL)),
        ("SendDtmf", pb.SendDtmfRequest(channel=CHANNEL, digits="1")),
        ("Hold", pb.HoldRequest(channel=CHANNEL)),
    ):
        code, reason, _ = failure(getattr(cluster.stub, method), request, token=TENANT_B)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "DOMAIN_NOT_ALLOWED")
    assert cluster.jobs(0) == []


def test_a_tenant_token_uses_only_the_default_context_or_its_domains(cluster: Cluster) -> None:
    """A dialplan context decides what a call may reach (another tenant's extensions,
    gateways): a domain-limited token may name only the server's default context or one
    named after its own domains."""
    cluster.start_call(0, CALL_B, "1000", B)
    cluster.register(0, "1000", B)
    tenant_call = f"channels/{CALL_B}"
    for call, request in (
        (
            cluster.stub.Originate,
            _originate(extension=f"domains/{B}/extensions/1000", context="internal"),
        ),
        (cluster.stub.Originate, _originate(extension=f"domains/{B}/extensions/1000", context=A)),
        (
            cluster.stub.Transfer,
            pb.TransferRequest(channel=tenant_call, destination="1002", context="internal"),
        ),
    ):
        code, reason, metadata = failure(call, request, token=TENANT_B)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CONTEXT_NOT_ALLOWED")
        assert metadata["context"] == request.context
    assert cluster.jobs(0) == []
    cluster.stub.Transfer(
        pb.TransferRequest(channel=tenant_call, destination="1002", context=B),
        metadata=auth(TENANT_B),
        timeout=10,
    )
    cluster.stub.Transfer(
        pb.TransferRequest(channel=tenant_call, destination="1003"),
        metadata=auth(TENANT_B),
        timeout=10,
    )
    assert cluster.jobs(0) == [
        f"uuid_transfer {CALL_B} 1002 XML {B}",
        f"uuid_transfer {CALL_B} 1003 XML default",
    ]
    # A full-access token still names any context.
    cluster.stub.Transfer(
        pb.TransferRequest(channel=tenant_call, destination="1004", context="internal"),
        metadata=auth(),
        timeout=10,
    )
    assert cluster.jobs(0)[-1] == f"uuid_transfer {CALL_B} 1004 XML internal"


def test_a_tenant_token_records_only_under_its_domain(cluster: Cluster) -> None:
    """The recordings directory is shared: a tenant's paths are under its domain's
    directory, so it cannot overwrite (or stop by path) another tenant's recordings."""
    cluster.start_call(0, CALL_B, "1000", B)
    channel = f"channels/{CALL_B}"
    for request in (
        pb.StartRecordingRequest(channel=channel, path="2026/call-42.wav"),
        pb.StartRecordingRequest(channel=channel),
        pb.StopRecordingRequest(channel=channel, path="2026/call-42.wav"),
    ):
        method = type(request).__name__.removesuffix("Request")
        getattr(cluster.stub, method)(request, metadata=auth(TENANT_B), timeout=10)
    cluster.stub.StartRecording(
        pb.StartRecordingRequest(channel=channel, path="2026/call-42.wav"),
        metadata=auth(),
        timeout=10,
    )
    assert cluster.jobs(0) == [
        f"uuid_record {CALL_B} start /var/rec/{B}/2026/call-42.wav",
        f"uuid_record {CALL_B} start /var/rec/{B}/{CALL_B}.wav",
        f"uuid_record {CALL_B} stop /var/rec/{B}/2026/call-42.wav",
        f"uuid_record {CALL_B} start /var/rec/2026/call-42.wav",
    ]


def test_a_tenant_token_reads_only_its_domain(cluster: Cluster) -> None:
    cluster.register(0, "1000", A)
    cluster.register(0, "1000", B)
    until(lambda: cluster.redis.hlen("registrations") == 2, what="both registered")
    listed = cluster.events.ListRegistrations(
        events_pb2.ListRegistrationsRequest(), metadata=auth(TENANT_B)
    )
    assert [r.key for r in listed.registrations] == [f"1000@{B}"]
    full = cluster.events.ListRegistrations(events_pb2.ListRegistrationsRequest(), metadata=auth())
    assert len(full.registrations) == 2
    code, reason, _ = failure(
        cluster.events.GetRegistration,
        events_pb2.GetRegistrationRequest(name=f"registrations/1000@{A}"),
        token=TENANT_B,
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "DOMAIN_NOT_ALLOWED")
    code, reason, _ = failure(
        cluster.events.ListRegistrations,
        events_pb2.ListRegistrationsRequest(domain=A),
        token=TENANT_B,
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "DOMAIN_NOT_ALLOWED")
    watch = cluster.events.Watch(events_pb2.WatchRequest(), metadata=auth(TENANT_B), timeout=10)
    seen = []
    for response in watch:
        seen.extend(response.events)
        if seen[-1].type == events_pb2.WatchEvent.TYPE_SNAPSHOT_COMPLETE:
            break
    watch.cancel()
    assert [e.key for e in seen if e.key] == [f"1000@{B}"]


def test_a_read_only_token_reads_but_cannot_control(cluster: Cluster) -> None:
    cluster.start_call(0, CALL, "1000", A)
    code, reason, _ = failure(cluster.stub.Hangup, pb.HangupRequest(channel=CHANNEL), token=READER)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "READ_ONLY_TOKEN")
    assert cluster.jobs(0) == []
    calls = cluster.events.ListExtensionCalls(
        events_pb2.ListExtensionCallsRequest(), metadata=auth(READER)
    )
    assert [c.key for c in calls.extension_calls] == [f"1000@{A}"]


def test_every_control_call_is_logged_without_secrets(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.start_call(0, CALL, "1000", A)
    with caplog.at_level("INFO", logger="event_service.api.control"):
        cluster.stub.Hangup(pb.HangupRequest(channel=CHANNEL), metadata=auth())
        failure(cluster.stub.Hangup, pb.HangupRequest(channel=CHANNEL), token=TENANT_B)
    audits = [r for r in caplog.records if r.getMessage() == "call control"]
    assert [(r.who, r.method, r.outcome, r.channel) for r in audits] == [  # type: ignore[attr-defined]
        ("full-access", "Hangup", "OK", CALL),
        ("tenant-b", "Hangup", "PERMISSION_DENIED", CALL),
    ]
    assert not any(TOKEN in str(r.__dict__) or TENANT_B in str(r.__dict__) for r in audits)
