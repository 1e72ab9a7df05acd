"""The event service's plain-HTTP port (``events.metrics_listen``): ``GET /metrics`` for
Prometheus, ``GET /ready`` for the Kubernetes readiness probe.

Ready means Redis answers: both replicas serve the gRPC read/Watch API from Redis, and
the standby must be ready to take a node's lease over. FreeSWITCH nodes are reported in
the body (which this replica holds, which it consumes), never required: a FreeSWITCH
outage must not take the API away. Liveness stays gRPC health on the gRPC port.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from cti.addresses import split_address
from cti.config import ConfigError

log = logging.getLogger(__name__)

READY_PATH = "/ready"


@dataclass(frozen=True)
class NodeStatus:
    holding: bool
    connected: bool


@dataclass(frozen=True)
class Readiness:
    redis: bool
    nodes: dict[str, NodeStatus] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.redis

    def body(self) -> bytes:
        nodes = {
            address: {"holding": node.holding, "connected": node.connected}
            for address, node in self.nodes.items()
        }
        return json.dumps({"ready": self.ready, "redis": self.redis, "nodes": nodes}).encode()


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
        elif self.path == READY_PATH:
            readiness = self.server.readiness()
            self._send(200 if readiness.ready else 503, "application/json", readiness.body())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds are not worth a log line each."""


class StatusServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listen: str, readiness: Callable[[], Readiness]) -> None:
        host, port = split_address(listen)
        self.readiness = readiness
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)


def serve(listen: str, readiness: Callable[[], Readiness]) -> StatusServer:
    """Bind ``listen`` and serve in a daemon thread; ``shutdown()`` stops it. A port in
    use is a :class:`ConfigError` (the service refuses to start)."""
    try:
        server = StatusServer(listen, readiness)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(f"metrics listen {listen}: {reason}") from None
    threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
    return server
