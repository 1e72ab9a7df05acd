"""The real services as processes against a given REDIS_URL, failing fast if they exit
(a service that cannot use the Redis topology must not cost a long port timeout)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.directory.service import Service
from tests.support import REPO, free_port


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answers on 127.0.0.1:{port}:\n{log.read_text()[-3000:]}")


@contextmanager
def _process(
    module: str, config: Mapping[str, object], env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"cti-{module}-"))
    (workdir / "cti.json").write_text(json.dumps(config))
    log = workdir / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--config", str(workdir / "cti.json")],
            cwd=REPO,
            env={**os.environ, "CTI_LOG_LEVEL": "INFO", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def directory_service(redis_url: str, redis_password: str = "") -> Iterator[Service]:
    http_port, grpc_port = free_port(), free_port()
    env = {
        "REDIS_URL": redis_url,
        "REDIS_PASSWORD": redis_password,
        "CTI_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "CTI_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
    }
    with _process("directory_service", {}, env) as (process, log):
        _wait_listening(process, http_port, log)
        yield Service(http_port, grpc_port, process, log)


@contextmanager
def event_service(
    redis_url: str,
    esl_address: str,
    redis_password: str = "",
    *,
    gui: Mapping[str, object] | None = None,
    grpc_port: int | None = None,
    api_token: str = "",
) -> Iterator[Path]:
    """Yields the service's log path once its metrics port answers. ``gui`` is its cti.json's
    ``gui`` section (hash names...); ``grpc_port``/``api_token`` for calling its API."""
    with event_service_process(
        redis_url,
        esl_address,
        redis_password,
        gui=gui,
        grpc_port=grpc_port,
        api_token=api_token,
    ) as (_, log):
        yield log


@contextmanager
def event_service_process(
    redis_url: str,
    esl_address: str,
    redis_password: str = "",
    *,
    gui: Mapping[str, object] | None = None,
    grpc_port: int | None = None,
    api_token: str = "",
    events: Mapping[str, object] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """:func:`event_service`, also yielding the process (to signal it); ``events``
    overrides keys of its cti.json's ``events`` section."""
    metrics_port = free_port()
    config: dict[str, object] = {
        "events": {
            "metrics_listen": f"127.0.0.1:{metrics_port}",
            "lease_seconds": 3,
            **(events or {}),
        }
    }
    if gui is not None:
        config["gui"] = gui
    env = {
        "REDIS_URL": redis_url,
        "REDIS_PASSWORD": redis_password,
        "CTI_ESL_NODES": esl_address,
        "CTI_ESL_PASSWORD": "ClueCon",
        "CTI_GRPC_LISTEN": f"127.0.0.1:{grpc_port or free_port()}",
    }
    if api_token:
        env["CTI_API_TOKEN"] = api_token
    with _process("event_service", config, env) as (process, log):
        _wait_listening(process, metrics_port, log)
        yield process, log
