"""``python -m event_service`` as a process: env config, metrics, gRPC up, clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import redis

from cti import redis_keys
from cti.changes import DirectoryChange
from tests.eslserver import FakeFreeSwitch, fixture_frames
from tests.events.helpers import until
from tests.support import REPO, RedisServer, free_port, wait_for_port


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


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_ready_follows_redis_and_every_node_has_its_gauge_from_start(tmp_path: Path) -> None:
    """Against a stopped Redis: not ready, yet every configured node's gauges exist (0).
    Once Redis answers: ready, with the nodes reported (one up, one never reachable)."""
    server = RedisServer()  # not started: nothing listens on its port yet
    fs = FakeFreeSwitch().start()
    dead = FakeFreeSwitch()
    dead.stop()
    metrics_port, grpc_port = free_port(), free_port()
    config = tmp_path / "cti.json"
    config.write_text(
        json.dumps({"events": {"metrics_listen": f"127.0.0.1:{metrics_port}", "lease_seconds": 2}})
    )
    env = dict(
        os.environ,
        REDIS_URL=server.url,
        CTI_ESL_NODES=f"{fs.address},{dead.address}",
        CTI_GRPC_LISTEN=f"127.0.0.1:{grpc_port}",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "event_service", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(metrics_port, timeout=30)
        status, body = _get(metrics_port, "/ready")
        assert status == 503
        assert json.loads(body)["redis"] is False
        _, text = _get(metrics_port, "/metrics")
        for node in (fs.address, dead.address):
            assert f'cti_events_connected{{node="{node}"}} 0.0' in text
            assert f'cti_events_lease_held{{node="{node}"}} 0.0' in text
        server.start()
        until(lambda: _get(metrics_port, "/ready")[0] == 200, what="ready", timeout=30)
        until(
            lambda: json.loads(_get(metrics_port, "/ready")[1])["nodes"][fs.address]["connected"],
            what="node reported connected",
            timeout=30,
        )
        status, body = _get(metrics_port, "/ready")
        nodes = json.loads(body)["nodes"]
        assert status == 200  # a node that cannot be reached is reported, not required
        assert nodes[dead.address]["connected"] is False
        assert nodes[dead.address]["holding"] is True  # this replica owns it, and retries
        _, text = _get(metrics_port, "/metrics")
        assert f'cti_events_connected{{node="{fs.address}"}} 1.0' in text
        assert f'cti_events_connected{{node="{dead.address}"}} 0.0' in text
        server.stop()
        until(lambda: _get(metrics_port, "/ready")[0] == 503, what="not ready", timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        fs.stop()
        server.stop()
