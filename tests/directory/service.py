"""Run the real ``python -m directory_service`` on free loopback ports, talk HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.support import REPO, free_port, wait_for_port


@dataclass
class Service:
    http_port: int
    grpc_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def post(
        self, body: bytes | str, headers: dict[str, str] | None = None, path: str = "/directory"
    ) -> tuple[int, bytes]:
        """One POST on a new connection, as mod_xml_curl does."""
        payload = body.encode() if isinstance(body, str) else body
        all_headers = {"Content-Type": "application/x-www-form-urlencoded", "Connection": "close"}
        all_headers.update(headers or {})
        return self.request("POST", path, payload, all_headers)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def lookup(self, domain: str, user: str, action: str = "sip_auth", **extra: str) -> bytes:
        fields = {
            "section": "directory",
            "tag_name": "domain",
            "key_name": "name",
            "key_value": domain,
            "action": action,
            "key": "id",
            "user": user,
            "domain": domain,
            **extra,
        }
        status, body = self.post(urlencode(fields))
        assert status == 200, (status, body)
        return body

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def metric(self, name: str, labels: str = "") -> float | None:
        """A sample of ``GET /metrics``, e.g. ``metric("x_total", 'outcome="hit"')``."""
        status, body = self.request("GET", "/metrics")
        assert status == 200
        wanted = f"{name}{{{labels}}} " if labels else f"{name} "
        for line in body.decode().splitlines():
            if line.startswith(wanted):
                return float(line.rsplit(" ", 1)[1])
        return None

    def cache_count(self, outcome: str) -> float:
        return self.metric("cti_directory_cache_lookups_total", f'outcome="{outcome}"') or 0.0

    def wait_until_live(self, timeout: float = 10.0) -> None:
        until(lambda: self.metric("cti_directory_cache_live") == 1.0, timeout)


def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


@contextmanager
def running_service(
    redis_url: str, config: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> Iterator[Service]:
    service = _start_service(redis_url, config or {}, env or {})
    try:
        yield service
    finally:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


def _start_service(redis_url: str, config: dict[str, Any], env: dict[str, str]) -> Service:
    """Start the service; retried on early exit (a free port taken by someone else)."""
    for attempt in range(3):
        http_port, grpc_port = free_port(), free_port()
        workdir = Path(tempfile.mkdtemp(prefix="cti-dir-"))
        config_path = workdir / "cti.json"
        config_path.write_text(json.dumps(config))
        log_path = workdir / "service.log"
        environment = {
            **os.environ,
            "REDIS_URL": redis_url,
            "CTI_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "CTI_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
            "CTI_LOG_LEVEL": "INFO",
            **env,
        }
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "directory_service", "--config", str(config_path)],
                cwd=REPO,
                env=environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                wait_for_port(http_port, timeout=0.2)
                return Service(http_port, grpc_port, process, log_path)
            except TimeoutError:
                continue
        if process.poll() is None:
            process.kill()
            process.wait()
        if attempt == 2:
            raise RuntimeError(f"directory_service did not start:\n{log_path.read_text()}")
    raise AssertionError("unreachable")


def parse_user(document: bytes) -> tuple[str, ET.Element, ET.Element]:
    """(domain name, domain element, the single user element) of a user answer."""
    root = ET.fromstring(document)
    assert root.tag == "document" and root.get("type") == "freeswitch/xml"
    domain = root.find("./section[@name='directory']/domain")
    assert domain is not None, document
    users = domain.findall("./groups/group/users/user")
    assert len(users) == 1, document
    return domain.get("name") or "", domain, users[0]


def name_values(element: ET.Element, container: str, tag: str) -> dict[str, str]:
    found = element.find(container)
    if found is None:
        return {}
    return {item.get("name") or "": item.get("value") or "" for item in found.findall(tag)}


def is_not_found(document: bytes) -> bool:
    root = ET.fromstring(document)
    result = root.find("./section[@name='result']/result")
    return result is not None and result.get("status") == "not found"
