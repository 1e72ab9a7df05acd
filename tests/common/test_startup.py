"""Start-up as an operator sees it: a port already in use, an open API without tokens and an
unreachable Redis are each one JSON line (exit 2 for the refusals), and every line a
running service writes is JSON with an ISO 8601 UTC timestamp."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.directory.service import running_service
from tests.support import REPO, RedisServer, free_port, xml_curl_fixture

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@contextmanager
def occupied_port() -> Iterator[int]:
    """A port some other program listens on (no SO_REUSEPORT, as most programs do)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def start(module: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run a service that must refuse to start; it has 60 s (a busy CI machine) to do so."""
    config = tmp_path / "cti.json"
    config.write_text("{}")
    return subprocess.run(
        [sys.executable, "-m", module, "--config", str(config)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def free_ports_env(redis_url: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "CTI_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_DIRECTORY_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_EVENTS_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_ESL_NODES": f"127.0.0.1:{free_port()}",
    }


@pytest.mark.parametrize(
    ("module", "variable", "what"),
    [
        ("directory_service", "CTI_HTTP_LISTEN", "HTTP listen"),
        ("directory_service", "CTI_DIRECTORY_GRPC_LISTEN", "gRPC listen"),
        ("event_service", "CTI_EVENTS_GRPC_LISTEN", "gRPC listen"),
        ("event_service", "CTI_METRICS_LISTEN", "metrics listen"),
    ],
)
def test_a_port_in_use_is_one_line_and_exit_2(
    redis_server: RedisServer, tmp_path: Path, module: str, variable: str, what: str
) -> None:
    with occupied_port() as port:
        env = {**free_ports_env(redis_server.url), variable: f"127.0.0.1:{port}"}
        out = start(module, env, tmp_path)
    assert out.returncode == 2, out.stderr
    errors = [line for line in json_lines(out.stderr) if line["level"] == "ERROR"]
    assert len(errors) == 1, out.stderr
    assert errors[0]["message"].endswith(f"{what} 127.0.0.1:{port}: address already in use")
    assert "Traceback" not in out.stderr


def test_a_second_directory_service_on_the_same_ports_refuses_to_start(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with running_service(redis_server.url) as first:
        env = {
            "REDIS_URL": redis_server.url,
            "CTI_HTTP_LISTEN": f"127.0.0.1:{first.http_port}",
            "CTI_GRPC_LISTEN": f"127.0.0.1:{first.grpc_port}",
        }
        out = start("directory_service", env, tmp_path)
        assert out.returncode == 2
        assert "address already in use" in out.stderr
        assert first.process.poll() is None  # the first one serves on, alone


@pytest.mark.parametrize(
    ("module", "variable"),
    [
        ("directory_service", "CTI_DIRECTORY_GRPC_LISTEN"),
        ("event_service", "CTI_EVENTS_GRPC_LISTEN"),
    ],
)
def test_a_public_api_without_tokens_is_one_line_and_exit_2(
    redis_server: RedisServer, tmp_path: Path, module: str, variable: str
) -> None:
    env = {**free_ports_env(redis_server.url), variable: f"0.0.0.0:{free_port()}"}
    out = start(module, env, tmp_path)
    assert out.returncode == 2, out.stderr
    (error,) = [line for line in json_lines(out.stderr) if line["level"] == "ERROR"]
    assert "no API tokens configured" in error["message"]
    assert "Traceback" not in out.stderr


def test_every_line_is_json_with_utc_time_and_redis_down_is_said_at_start() -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with running_service(dead_redis) as svc:
        status, _ = svc.post(xml_curl_fixture("03")[1])
        assert status == 503
    lines = svc.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # raises on any non-JSON line
    assert all(ISO_UTC.match(record["time"]) for record in records)
    warnings = [r["message"] for r in records if r["level"] == "WARNING"]
    assert any(m.startswith(f"Redis at {dead_redis} is unreachable") for m in warnings)


LEAVING_CLIENT = """
import os, sys, time, grpc
from grpc_reflection.v1alpha import reflection_pb2 as pb, reflection_pb2_grpc as rpc
def requests():
    yield pb.ServerReflectionRequest(list_services="")
    time.sleep(60)
replies = rpc.ServerReflectionStub(grpc.insecure_channel(sys.argv[1])).ServerReflectionInfo(
    requests()
)
print(next(replies).list_services_response.service[0].name, flush=True)
os._exit(0)  # gone mid-stream, as a killed UI or a closed laptop
"""


def test_a_client_that_leaves_a_stream_is_not_an_error(redis_server: RedisServer) -> None:
    """A reflection client (a UI, grpcurl) that disconnects mid-stream logs no ERROR."""
    with running_service(redis_server.url) as svc:
        gone = subprocess.run(
            [sys.executable, "-c", LEAVING_CLIENT, f"127.0.0.1:{svc.grpc_port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert gone.stdout.startswith("cti.v1.DirectoryService"), gone.stderr
    # running_service stopped the service gracefully: the call has ended by now, whether
    # gRPC noticed the client leave while the servicer ran (one INFO line) or after it.
    assert svc.process.returncode == 0
    assert not [r for r in svc.logs() if r["level"] in ("ERROR", "CRITICAL")]
