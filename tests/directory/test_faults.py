"""Redis going away and coming back, Redis refusing CONFIG, caching switched off."""

from __future__ import annotations

import json
import socket
import subprocess

import redis

from tests.directory.service import (
    Service,
    is_not_found,
    name_values,
    parse_user,
    running_service,
    until,
)
from tests.directory.tcp_proxy import SilencingProxy
from tests.support import running_redis

DOMAIN = "faults.example"
KEY = f"cti_exten@{DOMAIN}"


def seed(url: str, password: str) -> None:
    client = redis.Redis.from_url(url)
    client.hset(KEY, "1000", json.dumps({"param": {"password": password}}))
    client.close()


def password(svc: Service) -> str:
    return name_values(parse_user(svc.lookup(DOMAIN, "1000"))[2], "params", "param")["password"]


def test_redis_outage_answers_503_then_recovers_by_itself() -> None:
    # A private Redis without notify-keyspace-events: the service must turn them on, and
    # again after the restart (a restarted Redis forgets CONFIG SET).
    with running_redis() as server, running_service(server.url) as svc:
        svc.wait_until_live()
        seed(server.url, "before")
        assert password(svc) == "before"
        server.stop()
        status, _ = svc.post(
            "section=directory&tag_name=domain&key_name=name"
            f"&key_value={DOMAIN}&action=sip_auth&key=id&user=1000"
        )
        assert status == 503
        server.start()
        seed(server.url, "after")
        until(
            lambda: (
                svc.post(
                    f"section=directory&tag_name=domain&key_name=name&key_value={DOMAIN}&user=1000"
                )[0]
                == 200
            )
        )
        assert password(svc) == "after"
        svc.wait_until_live()
        server.cli("HSET", KEY, "1000", json.dumps({"param": {"password": "by-hand"}}))
        until(lambda: password(svc) == "by-hand")  # asynchronous: docs/realtime.md
        assert "K" in server.cli("CONFIG", "GET", "notify-keyspace-events")


def test_config_refused_disables_the_cache_but_answers_stay_right() -> None:
    with (
        running_redis("--rename-command", "CONFIG", '""') as server,
        running_service(server.url) as svc,
    ):
        seed(server.url, "one")
        assert password(svc) == "one"
        seed(server.url, "two")
        assert password(svc) == "two"
        assert svc.cache_count("uncached") >= 2
        assert svc.metric("cti_directory_cache_live") == 0.0
        until(lambda: any("refuses CONFIG" in e["message"] for e in svc.logs()))


def test_cache_off_reads_redis_every_time_and_finds_aliases(redis_url: str) -> None:
    with running_service(redis_url, {"directory": {"cache": False}}) as svc:
        client = redis.Redis.from_url(redis_url)
        client.hset(
            KEY,
            "Alice",
            json.dumps({"attribute": {"number-alias": "2000"}, "param": {"password": "p"}}),
        )
        client.close()
        assert parse_user(svc.lookup(DOMAIN, "2000"))[2].get("id") == "Alice"
        assert parse_user(svc.lookup(DOMAIN, "alice"))[2].get("id") == "Alice"
        assert is_not_found(svc.lookup(DOMAIN, "bob"))
        assert svc.cache_count("hit") == 0 and svc.cache_count("uncached") == 3


def test_a_hung_redis_gets_503_at_the_deadline_not_a_hang() -> None:
    with (
        running_redis("--enable-debug-command", "local") as server,
        running_service(server.url, {"directory": {"http": {"deadline_ms": 300}}}) as svc,
    ):
        seed(server.url, "p")
        sleeper = subprocess.Popen(["redis-cli", "-p", str(server.port), "DEBUG", "SLEEP", "1"])
        try:
            until(lambda: server_busy(server.port))
            status, _ = svc.post(
                "section=directory&tag_name=domain&key_name=name"
                f"&key_value={DOMAIN}&action=sip_auth&key=id&user=1000"
            )
            assert status == 503
        finally:
            sleeper.wait(timeout=10)
        until(
            lambda: (
                svc.post(
                    f"section=directory&tag_name=domain&key_name=name&key_value={DOMAIN}&user=1000"
                )[0]
                == 200
            )
        )


def server_busy(port: int) -> bool:
    """True while Redis does not answer a PING within 50 ms (DEBUG SLEEP is running)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.settimeout(0.05)
        sock.sendall(b"PING\r\n")
        try:
            return not sock.recv(16)
        except TimeoutError:
            return True


def test_notifications_turned_off_behind_its_back_darken_then_come_back() -> None:
    """``CONFIG SET notify-keyspace-events ""`` while the subscriber stays connected (issue
    9, defect 4): the cache must stop answering from memory, restore the flags, warn once
    and be live again; it kept a password changed by hand for as long as it ran."""
    with running_redis() as server, running_service(server.url) as svc:
        svc.wait_until_live()
        seed(server.url, "before")
        assert password(svc) == "before"
        assert password(svc) == "before"  # cached now
        server.cli("CONFIG", "SET", "notify-keyspace-events", "")
        server.cli("HSET", KEY, "1000", json.dumps({"param": {"password": "by-hand"}}))
        until(lambda: password(svc) == "by-hand", timeout=20)
        until(lambda: "K" in server.cli("CONFIG", "GET", "notify-keyspace-events"), timeout=20)
        svc.wait_until_live(timeout=20)
        server.cli("HSET", KEY, "1000", json.dumps({"param": {"password": "again"}}))
        until(lambda: password(svc) == "again", timeout=20)
        warnings = [
            e
            for e in svc.logs()
            if e["level"] == "WARNING" and "notifications do not arrive" in e["message"]
        ]
        assert len(warnings) == 1, warnings


def test_a_deeply_nested_value_is_one_unusable_entry_logged_once(redis_url: str) -> None:
    """Issue 9, defect 1, end to end with the cache off (every lookup parses again): the
    entry answers not found, the domain's other users (by alias and any case too) are
    unaffected, and it is named once, by key and field, without a traceback."""
    deep = '{"template": "t", "attribute": {"number-alias": "x"}, "z": ' + "[" * 5000
    client = redis.Redis.from_url(redis_url)
    client.hset(
        KEY,
        mapping={
            "1000": json.dumps({"param": {"password": "p"}, "attribute": {"number-alias": "al"}}),
            "1001": deep + "]" * 5000 + "}",
        },
    )
    client.close()
    with running_service(redis_url, {"directory": {"cache": False}}) as svc:
        for _ in range(20):
            assert is_not_found(svc.lookup(DOMAIN, "1001"))
            assert parse_user(svc.lookup(DOMAIN, "AL"))[2].get("id") == "1000"
            assert is_not_found(svc.lookup(DOMAIN, "nobody"))
        named = [e for e in svc.logs() if e.get("redis_field") == "1001"]
        assert len(named) == 1 and named[0]["redis_key"] == KEY, named
        assert "Traceback" not in svc.log_path.read_text()


def test_a_subscriber_that_stops_receiving_is_noticed_and_replaced() -> None:
    """The subscriber's connection stays up but delivers nothing more (a stuck proxy or
    NAT, a wedged server; issue 9): the canary goes unheard, the cache goes dark and a new
    subscription takes over."""
    with (
        running_redis("--notify-keyspace-events", "KEA") as server,
        SilencingProxy(server.port) as proxy,
        running_service(proxy.url) as svc,
    ):
        svc.wait_until_live()
        seed(server.url, "before")
        assert password(svc) == "before"
        assert password(svc) == "before"  # cached now
        assert proxy.silence_subscribers() >= 1
        server.cli("HSET", KEY, "1000", json.dumps({"param": {"password": "by-hand"}}))
        until(lambda: password(svc) == "by-hand", timeout=20)
        svc.wait_until_live(timeout=20)
        server.cli("HSET", KEY, "1000", json.dumps({"param": {"password": "again"}}))
        until(lambda: password(svc) == "again", timeout=20)
        assert any("notifications do not arrive" in e["message"] for e in svc.logs())
