"""``make run`` (``python -m cti.devrun``): the Redis it uses, the ready summary, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.directory.service import until
from tests.support import RedisServer, free_port

READY = "CTI middleware is running"


@contextmanager
def devrun(
    tmp_path: Path, env: dict[str, str], *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    out = tmp_path / "devrun.out"
    config = tmp_path / "cti.json"
    config.write_text("{}")
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CTI_GRPC_LISTEN")},
        "CTI_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_DIRECTORY_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_EVENTS_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_ESL_NODES": f"127.0.0.1:{free_port()}",
        **env,
    }
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cti.devrun", "--config", str(config), *args],
            cwd=tmp_path,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)  # Ctrl-C
    return process.wait(timeout=60)


def test_uses_the_configured_redis_and_says_so(redis_server: RedisServer, tmp_path: Path) -> None:
    with devrun(tmp_path, {"REDIS_URL": redis_server.url}) as (process, out):
        until(lambda: READY in out.read_text(), timeout=90)
        summary = out.read_text()
        assert f"Redis                {redis_server.url} (from the config)" in summary
        assert "ctictl" in summary and "curl" in summary
        # the services really use it: their connections show up there
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        until(lambda: len(client.client_list()) >= 3, 30)
        assert stop(process) == 0
    assert not (tmp_path / ".run" / "redis").exists()  # no Redis of its own


def test_starts_its_own_redis_when_none_is_configured(tmp_path: Path) -> None:
    port = free_port()
    with devrun(tmp_path, {}, "--redis-port", str(port)) as (process, out):
        until(lambda: READY in out.read_text(), timeout=90)
        assert f"redis://127.0.0.1:{port}/0 (started for this run" in out.read_text()
        assert redis.Redis(port=port).ping()
        assert stop(process) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # Ctrl-C stopped its Redis too
        try:
            redis.Redis(port=port, socket_connect_timeout=1).ping()
        except redis.ConnectionError:
            return
        time.sleep(0.1)
    raise AssertionError("the Redis started by make run still answers")


def test_refuses_a_configured_redis_that_does_not_answer(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with devrun(tmp_path, {"REDIS_URL": dead}) as (process, out):
        assert process.wait(timeout=60) == 2
    assert f"the configured Redis {dead} does not answer" in out.read_text()


def test_one_grpc_variable_for_both_services_is_refused(tmp_path: Path) -> None:
    with devrun(tmp_path, {"CTI_GRPC_LISTEN": "127.0.0.1:50051"}) as (process, out):
        assert process.wait(timeout=60) == 2
    assert "CTI_DIRECTORY_GRPC_LISTEN" in out.read_text()
