"""Readiness of the xml_curl port: ready only while a lookup can be answered."""

from __future__ import annotations

from tests.directory.service import running_service, until
from tests.support import RedisServer, running_redis


def test_not_ready_while_redis_is_stopped_then_ready_once_it_answers() -> None:
    server = RedisServer()  # never started yet: nothing listens on its port
    with running_service(server.url) as svc:
        status, body = svc.request("GET", "/ready")
        assert (status, body) == (503, b"not ready: Redis unreachable, cache not live\n")
        assert svc.request("GET", "/metrics")[0] == 200  # metrics still answer
        server.start()
        try:
            until(lambda: svc.request("GET", "/ready")[0] == 200, timeout=20)
            assert svc.request("GET", "/ready")[1] == b"ready\n"
        finally:
            server.stop()


def test_ready_with_the_cache_off_follows_redis_alone() -> None:
    with (
        running_redis() as server,
        running_service(server.url, {"directory": {"cache": False}}) as svc,
    ):
        until(lambda: svc.request("GET", "/ready")[0] == 200, timeout=20)
        server.stop()
        until(lambda: svc.request("GET", "/ready")[0] == 503, timeout=20)
        server.start()
        until(lambda: svc.request("GET", "/ready")[0] == 200, timeout=20)


def test_ready_is_get_only() -> None:
    with running_redis() as server, running_service(server.url) as svc:
        assert svc.request("POST", "/ready", b"")[0] == 404
