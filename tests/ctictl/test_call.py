"""``ctictl call ...`` end to end: the installed script against the event service running as
its own process (``python -m event_service``), a fake FreeSWITCH that answers ``bgapi``
with BACKGROUND_JOB events, and a real Redis. Checks the exact command each ctictl command
makes reach FreeSWITCH, what it prints (plain and ``--json``), errors once on stderr, and
the wrong-address messages."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from cti import redis_keys
from ctictl.client import CALL_CONTROL, Target
from tests.ctictl.support import json_error, run_ctictl
from tests.directory.grpc_fixtures import TOKEN, start_api
from tests.eslserver import FakeFreeSwitch
from tests.events.helpers import inbound_call_event, registration_event, until
from tests.redis_ha.services import event_service_process
from tests.support import RedisServer, free_port, wait_for_port

DOMAIN = "a.example"
RECORDINGS = "/var/rec"


def dtmf_sent(command: str) -> str:
    """The fake FreeSWITCH's reply to ``uuid_send_dtmf <uuid> <digits>``."""
    return f"+OK {command.split()[1]} sent DTMF.\n"


def ctictl_at(events_address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ctictl ARGS`` with ``CTI_EVENTS_ADDRESS`` (the ``call`` group's) set."""
    return run_ctictl(events_address, *args, address_variable="CTI_EVENTS_ADDRESS")


@dataclass
class EventService:
    """The event service process, the fake FreeSWITCH it follows, and its Redis."""

    address: str
    fs: FakeFreeSwitch
    redis: redis.Redis
    redis_url: str

    def ctictl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return ctictl_at(self.address, *args)

    def register(self, user: str) -> None:
        self.fs.send_event(registration_event(user, DOMAIN))
        devices = redis_keys.registration_devices("registrations")
        until(lambda: self.redis.hexists(devices, f"{user}@{DOMAIN}"), what="registered")

    def start_call(self, user: str = "1000") -> str:
        """A new inbound call from ``user`` on the node; its uuid once the service knows it."""
        call_uuid = str(uuid.uuid4())
        self.fs.send_event(inbound_call_event(call_uuid, user, DOMAIN))
        channels = redis_keys.call_channels("calls")
        until(lambda: self.redis.hexists(channels, call_uuid), what="channel known")
        return call_uuid


@pytest.fixture(scope="module")
def service(redis_server: RedisServer) -> Iterator[EventService]:
    """One event service process for the module (each test uses its own call uuids and
    looks only at the jobs it caused)."""
    if redis_server.process is None:  # an earlier test stopped it
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    fs = FakeFreeSwitch().start()
    for command in ("uuid_kill", "uuid_transfer", "uuid_record", "originate"):
        fs.api_replies[command] = "+OK\n"
    fs.api_replies["uuid_hold"] = "+OK Success\n"
    fs.api_replies["uuid_send_dtmf"] = dtmf_sent
    grpc_port = free_port()
    events = {
        "registration_key": "extension@domain",
        "control": {"recordings_dir": RECORDINGS, "variables": ["crm_*"]},
    }
    try:
        with event_service_process(
            redis_server.url, fs.address, grpc_port=grpc_port, api_token=TOKEN, events=events
        ):
            fs.wait_subscribed(timeout=30)
            wait_for_port(grpc_port, timeout=30)
            yield EventService(f"127.0.0.1:{grpc_port}", fs, client, redis_server.url)
    finally:
        fs.stop()
        client.close()


def commands_since(service: EventService, before: int) -> list[str]:
    """The bgapi commands FreeSWITCH received after the first ``before``."""
    return [command for command, _ in service.fs.bgapi[before:]]


# -- dial ---------------------------------------------------------------------------------


def test_dial_rings_the_extension_and_prints_the_uuid(service: EventService) -> None:
    service.register("1000")
    before = len(service.fs.bgapi)
    dial = (
        "call", "dial", f"1000@{DOMAIN}", "1002",
        "--context", "sales",
        "--caller-id-name", "Sales Desk",
        "--caller-id-number", "+4930123",
        "--timeout", "20",
        "--auto-answer",
        "--var", "crm_ticket=T-42",
        "--request-id", "crm-dial-1",
    )  # fmt: skip
    result = service.ctictl(*dial)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    call_uuid = result.stdout.strip()
    assert result.stdout == f"{call_uuid}\n" and str(uuid.UUID(call_uuid)) == call_uuid
    assert commands_since(service, before) == [
        f"originate {{crm_ticket=T-42,origination_uuid={call_uuid},originate_timeout=20,"
        "cti_originate=true,sip_auto_answer=true,origination_caller_id_name=Sales\\sDesk,"
        f"origination_caller_id_number=+4930123}}user/1000@{DOMAIN} 1002 XML sales"
    ]
    # the same request id again: the stored answer, nothing dialled
    again = service.ctictl("--json", *dial)
    assert again.returncode == 0, again.stderr
    document = json.loads(again.stdout)
    assert document["uuid"] == call_uuid and document["replayed"] is True
    assert document["channel"] == f"channels/{call_uuid}"
    assert document["node"] == service.fs.address
    assert len(commands_since(service, before)) == 1


def test_dial_json_defaults(service: EventService) -> None:
    service.register("1001")
    before = len(service.fs.bgapi)
    result = service.ctictl("--json", "call", "dial", f"1001@{DOMAIN}", "1002")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    ((command, job_uuid),) = service.fs.bgapi[before:]
    assert document == {
        "uuid": document["uuid"],
        "channel": f"channels/{document['uuid']}",
        "node": service.fs.address,
        "job_uuid": job_uuid,
        "replayed": False,
    }
    assert command == (
        f"originate {{origination_uuid={document['uuid']},originate_timeout=30,"
        f"cti_originate=true}}user/1001@{DOMAIN} 1002 XML default"
    )


# -- commands on a channel ----------------------------------------------------------------

CHANNEL_COMMANDS = [
    (["hangup", "{uuid}"], "uuid_kill {uuid} NORMAL_CLEARING", "hangup", "+OK"),
    (["hangup", "{uuid}", "--cause", "USER_BUSY"], "uuid_kill {uuid} USER_BUSY", "hangup", "+OK"),
    (["transfer", "{uuid}", "1002"], "uuid_transfer {uuid} 1002 XML default", "transfer", "+OK"),
    (
        ["transfer", "channels/{uuid}", "*98", "--context", "sales", "--leg", "other"],
        "uuid_transfer {uuid} -bleg *98 XML sales",
        "transfer",
        "+OK",
    ),
    (
        ["transfer", "{uuid}", "2000", "--leg", "both"],
        "uuid_transfer {uuid} -both 2000 XML default",
        "transfer",
        "+OK",
    ),
    (["hold", "{uuid}"], "uuid_hold {uuid}", "hold", "+OK Success"),
    (["unhold", "{uuid}"], "uuid_hold off {uuid}", "unhold", "+OK Success"),
    (
        ["record", "{uuid}", "start"],
        f"uuid_record {{uuid}} start {RECORDINGS}/{{uuid}}.wav",
        "record start",
        "+OK",
    ),
    (
        ["record", "{uuid}", "start", "--path", "2026/05/call-42.wav", "--max-seconds", "60"],
        f"uuid_record {{uuid}} start {RECORDINGS}/2026/05/call-42.wav 60",
        "record start",
        "+OK",
    ),
    (["record", "{uuid}", "stop"], "uuid_record {uuid} stop all", "record stop", "+OK"),
    (
        ["record", "{uuid}", "stop", "--path", "2026/05/call-42.wav"],
        f"uuid_record {{uuid}} stop {RECORDINGS}/2026/05/call-42.wav",
        "record stop",
        "+OK",
    ),
    (["dtmf", "{uuid}", "12#w3"], "uuid_send_dtmf {uuid} 12#w3", "dtmf", "+OK {uuid} sent DTMF."),
]


@pytest.mark.parametrize(("args", "command", "action", "reply"), CHANNEL_COMMANDS)
def test_channel_command_reaches_freeswitch(
    service: EventService, args: list[str], command: str, action: str, reply: str
) -> None:
    call_uuid = service.start_call()
    before = len(service.fs.bgapi)
    result = service.ctictl("call", *(a.format(uuid=call_uuid) for a in args))
    assert result.returncode == 0, result.stderr
    assert commands_since(service, before) == [command.format(uuid=call_uuid)]
    reply = reply.format(uuid=call_uuid)
    assert result.stdout == f"{action} {call_uuid} on {service.fs.address}: {reply}\n"
    assert result.stderr == ""


def test_channel_command_json(service: EventService) -> None:
    call_uuid = service.start_call()
    result = service.ctictl("--json", "call", "hangup", call_uuid, "--cause", "CALL_REJECTED")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "uuid": call_uuid,
        "channel": f"channels/{call_uuid}",
        "node": service.fs.address,
        "reply": "+OK",
    }


def test_listen_calls_the_supervisor_into_the_channel(service: EventService) -> None:
    service.register("2000")
    call_uuid = service.start_call()
    before = len(service.fs.bgapi)
    result = service.ctictl("call", "listen", call_uuid, f"2000@{DOMAIN}", "--mode", "barge")
    assert result.returncode == 0, result.stderr
    supervisor_leg = result.stdout.strip()
    assert commands_since(service, before) == [
        f"originate {{origination_uuid={supervisor_leg},originate_timeout=30,"
        "cti_originate=true,eavesdrop_enable_dtmf=false,"
        "eavesdrop_whisper_aleg=true,eavesdrop_whisper_bleg=true}"
        f"user/2000@{DOMAIN} &eavesdrop({call_uuid})"
    ]


# -- errors -------------------------------------------------------------------------------


def test_unknown_channel_is_one_error_on_stderr(service: EventService) -> None:
    missing = str(uuid.uuid4())
    before = len(service.fs.bgapi)
    result = service.ctictl("call", "hangup", missing)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: NOT_FOUND CHANNEL_NOT_FOUND: ")
    assert missing in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.count("error") == 1
    error = json_error(service.ctictl("--json", "call", "hold", missing))
    assert (error["code"], error["reason"]) == ("NOT_FOUND", "CHANNEL_NOT_FOUND")
    assert commands_since(service, before) == []


def test_freeswitch_refusal_is_reported_with_its_reply(service: EventService) -> None:
    call_uuid = service.start_call()
    service.fs.api_replies["uuid_send_dtmf"] = "-ERR Operation failed\n"
    try:
        error = json_error(service.ctictl("--json", "call", "dtmf", call_uuid, "1"))
    finally:
        service.fs.api_replies["uuid_send_dtmf"] = lambda cmd: f"+OK {cmd.split()[1]} sent DTMF.\n"
    assert (error["code"], error["reason"]) == ("FAILED_PRECONDITION", "FREESWITCH_ERROR")
    assert "Operation failed" in error["message"]


def test_bad_arguments_are_refused_and_nothing_is_sent(service: EventService) -> None:
    call_uuid = service.start_call()
    before = len(service.fs.bgapi)
    result = service.ctictl("call", "transfer", call_uuid, "1002;hangup")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: INVALID_ARGUMENT")
    assert "  destination: " in result.stderr  # the field the server named
    result = service.ctictl("call", "hold", "not-a-uuid")
    assert result.returncode == 1 and "INVALID_ARGUMENT" in result.stderr
    usage = service.ctictl("call", "transfer", call_uuid, "1002", "--leg", "sideways")
    assert usage.returncode == 2 and "--leg" in usage.stderr
    usage = service.ctictl("call", "dial", "1000", "1002")
    assert usage.returncode == 2 and "ID@DOMAIN" in usage.stderr
    usage = service.ctictl("call", "record", call_uuid, "stop", "--max-seconds", "5")
    assert usage.returncode == 2 and "--max-seconds" in usage.stderr
    assert commands_since(service, before) == []


# -- wrong address ------------------------------------------------------------------------


def test_call_at_the_directory_port_says_it_is_not_the_event_service(
    service: EventService,
) -> None:
    server, api = start_api(service.redis_url)
    try:
        result = ctictl_at(api.address, "call", "hold", str(uuid.uuid4()))
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == (
            f"error: UNIMPLEMENTED WRONG_SERVICE: {api.address} is not an event service with "
            "call control (it serves cti.v1.DirectoryService); is --events-address / "
            "CTI_EVENTS_ADDRESS right?\n"
        )
        # the flag wins over the variable; the directory groups keep using --address
        flag = service.ctictl(
            "--json", "--events-address", api.address, "call", "unhold", str(uuid.uuid4())
        )
        assert json_error(flag)["reason"] == "WRONG_SERVICE"
        listed = run_ctictl(api.address, "--json", "--events-address", "127.0.0.1:1", "dom", "list")
        assert listed.returncode == 0, listed.stderr
    finally:
        api.channel.close()
        server.stop(None).wait()


def test_call_with_nothing_listening_names_the_event_service() -> None:
    address = f"127.0.0.1:{free_port()}"  # bound and released: nothing listens
    result = ctictl_at(address, "call", "hangup", str(uuid.uuid4()))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: UNAVAILABLE CONNECTION_REFUSED: {address}: connection refused (nothing "
        "listens there; is event_service running, and is --events-address / "
        "CTI_EVENTS_ADDRESS right?)\n"
    )


def test_call_defaults_to_the_event_service_port() -> None:
    """Without flag or variable, ``call`` goes to 127.0.0.1:50052, whatever
    ``CTI_API_ADDRESS`` says."""
    env = {"CTI_API_ADDRESS": "127.0.0.1:1"}
    target = Target.from_flags(CALL_CONTROL, None, None, False, None, 5.0, env=env)
    assert target.address == "127.0.0.1:50052"
