"""The service as a process: bad config fails at start, SIGTERM stops it cleanly, both
ports answer."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.directory.service import running_service
from tests.support import REPO, RedisServer


def test_invalid_config_fails_at_start_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cti.json"
    path.write_text(
        '{\n  // comment\n  "directory": {\n    "http": {"deadline_ms": "soon"}\n  }\n}\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "directory_service", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert f"{path}: line 4: directory.http.deadline_ms: must be int" in out.stderr


def test_sigterm_stops_http_and_grpc_cleanly(redis_server: RedisServer) -> None:
    with running_service(redis_server.url) as svc:
        with socket.create_connection(("127.0.0.1", svc.grpc_port), timeout=5):
            pass  # the gRPC API runs in the same service
        svc.process.send_signal(signal.SIGTERM)
        assert svc.process.wait(timeout=90) == 0  # a busy CI machine can be slow
        assert "directory service stopped" in svc.log_path.read_text()
