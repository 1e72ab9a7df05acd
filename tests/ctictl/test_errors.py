"""How ``ctictl`` fails: once, on stderr, unwrapped (JSON only with ``--json``), and for a
wrong or dead address with what it reached instead of gRPC's retries and raw text."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from tests.ctictl.support import ctictl, json_error, run_ctictl
from tests.directory.grpc_fixtures import Api, api_fixture, start_api
from tests.events.grpc_support import running_api
from tests.support import free_port

__all__ = ["api_fixture"]


def test_long_error_is_one_unwrapped_line_on_stderr_only(api: Api) -> None:
    """Not on a terminal and with a narrow COLUMNS, the server's message stays whole."""
    result = run_ctictl(
        api.address, "ext", "add", "1@example.com", "--param", "auth-acl=10.0.0.1", columns=40
    )
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: INVALID_ARGUMENT")
    assert "write an address as CIDR (10.0.0.1/32)" in lines[0]
    assert lines[1:] == ["  extension.params.auth-acl: '10.0.0.1': write an address as CIDR "
                         "(10.0.0.1/32)"]  # fmt: skip
    assert result.stderr.count("error") == 1


def test_json_error_is_json_only(api: Api) -> None:
    result = ctictl(api, "--json", "ext", "add", "1@example.com", "--param", "auth-acl=10.0.0.1")
    error = json_error(result)
    assert result.returncode == 1
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["fields"] == [
        {"field": "extension.params.auth-acl", "description": "'10.0.0.1': write an address "
         "as CIDR (10.0.0.1/32)"}
    ]  # fmt: skip


def test_usage_errors_exit_2_and_follow_json(api: Api) -> None:
    plain = ctictl(api, "ext", "get", "no-domain")
    assert plain.returncode == 2 and plain.stdout == "" and "ID@DOMAIN" in plain.stderr
    error = json_error(ctictl(api, "--json", "ext", "get", "no-domain"))
    assert error["code"] == "USAGE" and "expected ID@DOMAIN" in error["message"]
    error = json_error(ctictl(api, "--json", "ext", "frobnicate"))
    assert error["code"] == "USAGE" and "frobnicate" in error["message"]


def test_dead_port_says_connection_refused() -> None:
    address = f"127.0.0.1:{free_port()}"  # bound and released: nothing listens
    result = run_ctictl(address, "ext", "list")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: UNAVAILABLE CONNECTION_REFUSED: {address}: ")
    assert "connection refused" in result.stderr and len(result.stderr.splitlines()) == 1
    error = json_error(run_ctictl(address, "--json", "ext", "list"))
    assert error["reason"] == "CONNECTION_REFUSED" and address in error["message"]


def test_event_service_port_is_named(redis_url: str) -> None:
    with running_api(redis_url) as events:
        address = f"127.0.0.1:{events.server.port}"
        result = run_ctictl(address, "ext", "list")
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == (
            f"error: UNIMPLEMENTED WRONG_SERVICE: {address} is not a DirectoryService (it "
            "serves cti.v1.CallControlService, cti.v1.EventService); is --address / "
            "CTI_API_ADDRESS right?\n"
        )
        error = json_error(run_ctictl(address, "--json", "domains", "list"))
        assert error["reason"] == "WRONG_SERVICE"


@pytest.fixture(name="silent_port")
def silent_port_fixture() -> Iterator[int]:
    """A port whose kernel accepts connections but no program ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def test_port_that_does_not_speak_grpc(silent_port: int) -> None:
    address = f"127.0.0.1:{silent_port}"
    result = run_ctictl(address, "--json", "--connect-timeout", "0.5", "ext", "list")
    error = json_error(result)
    assert error["reason"] == "NOT_GRPC"
    assert error["message"].startswith(f"{address} accepts connections but gave no plaintext")


def test_directory_service_not_serving(redis_url: str) -> None:
    server, api = start_api(redis_url)
    try:
        server.health.set("cti.v1.DirectoryService", health_pb2.HealthCheckResponse.NOT_SERVING)
        error = json_error(run_ctictl(api.address, "--json", "ext", "list"))
        assert error["reason"] == "NOT_SERVING" and "NOT_SERVING" in error["message"]
    finally:
        api.channel.close()
        server.stop(None).wait()


def test_unimplemented_call_names_what_the_server_serves() -> None:
    """A gRPC server without health (so the connect check passes) that serves something
    else: the UNIMPLEMENTED answer is explained from its reflection service."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    reflection.enable_server_reflection(("acme.v1.Billing", reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = run_ctictl(f"127.0.0.1:{port}", "ext", "list")
    finally:
        server.stop(None).wait()
    assert result.returncode == 1
    assert f"127.0.0.1:{port} is not a DirectoryService (it serves acme.v1.Billing)" in (
        result.stderr
    )
