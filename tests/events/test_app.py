"""``python -m event_service`` as a process: env config, metrics, gRPC up, clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import redis

from cti import redis_keys
from cti.changes import DirectoryChange
from tests.eslserver import FakeFreeSwitch, fixture_frames
from tests.events.helpers import until
from tests.support import REPO, free_port, wait_for_port


def test_service_runs_from_env_and_stops_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    fs = FakeFreeSwitch().start()
    metrics_port, grpc_port = free_port(), free_port()
    config = tmp_path / "cti.json"
    config.write_text(json.dumps({"events": {"metrics_listen": f"127.0.0.1:{metrics_port}"}}))
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        CTI_ESL_NODES=fs.address,
        CTI_ESL_PASSWORD="ClueCon",
        CTI_GRPC_LISTEN=f"127.0.0.1:{grpc_port}",
    )
    log_path = tmp_path / "events.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "event_service", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        fs.wait_subscribed()
        wait_for_port(metrics_port)
        wait_for_port(grpc_port)
        fs.send_frames(fixture_frames()[:2])
        until(lambda: client.hlen("registrations") == 2, what="registrations")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as reply:
            text = reply.read().decode()
        assert (
            f'cti_events_received_total{{node="{fs.address}",type="sofia::register"}} 2.0' in text
        )
        assert f'cti_events_connected{{node="{fs.address}"}} 1.0' in text
        # an API change event reaches FreeSWITCH as a cache flush
        change = DirectoryChange("extension", "update", "example.com", "1001", "alice")
        until(
            lambda: (
                client.publish(redis_keys.DIRECTORY_CHANGES_CHANNEL, change.to_json())
                and "api xml_flush_cache id alice example.com" in fs.commands
            ),
            what="flush sent",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        client.close()
        fs.stop()
        log_file.close()
    logs = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    assert any(entry["message"] == "event service stopped" for entry in logs)
    assert not any("ClueCon" in json.dumps(entry) for entry in logs)


def test_bad_configuration_exits_2_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "cti.json"
    config.write_text('{"events": {"multiple_registrations": {"internal": "maybe"}}}')
    result = subprocess.run(
        [sys.executable, "-m", "event_service", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"events.multiple_registrations.internal: must be one of" in result.stderr
