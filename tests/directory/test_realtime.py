"""The answer is what Redis holds now: writes by hand and API-style bracketed writes, with
the real service, its cache and a real Redis."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from cti import redis_keys
from cti.changes import DirectoryChange
from tests.directory.service import (
    Service,
    is_not_found,
    name_values,
    parse_user,
    running_service,
    until,
)
from tests.support import RedisServer

_counter = itertools.count()
DEADLINE = 10.0


def doc(**sections: Any) -> str:
    return json.dumps(sections)


@pytest.fixture(scope="module")
def service(redis_server: RedisServer) -> Iterator[Service]:
    with running_service(redis_server.url) as svc:
        svc.wait_until_live()
        yield svc


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def domain() -> str:
    """A domain no other test touched (the service outlives each test's FLUSHALL)."""
    return f"rt{next(_counter)}.example"


def password_of(document: bytes) -> str:
    return name_values(parse_user(document)[2], "params", "param").get("password", "")


def eventually(condition: Callable[[], bool]) -> None:
    """A write by hand reaches a replica through an asynchronous keyspace notification:
    the bound is measured by ``bench/bench_invalidation.py`` (docs/realtime.md); a test
    only waits for it, with a deadline generous enough for a busy machine."""
    until(condition, timeout=DEADLINE)


def test_write_by_hand_is_answered_within_the_bound(
    service: Service, redis_server: RedisServer, client: redis.Redis, domain: str
) -> None:
    key = redis_keys.extensions(domain)
    client.hset(key, "1000", doc(param={"password": "one"}))
    assert password_of(service.lookup(domain, "1000")) == "one"
    hits = service.cache_count("hit")
    assert password_of(service.lookup(domain, "1000")) == "one"
    assert service.cache_count("hit") == hits + 1  # answered from the cache
    redis_server.cli("HSET", key, "1000", doc(param={"password": "two"}))
    eventually(lambda: password_of(service.lookup(domain, "1000")) == "two")
    redis_server.cli("HDEL", key, "1000")
    eventually(lambda: is_not_found(service.lookup(domain, "1000")))
    redis_server.cli("HSET", key, "1001", doc(param={"password": "x"}))
    eventually(lambda: password_of(service.lookup(domain, "1001")) == "x")
    redis_server.cli("DEL", key)
    eventually(lambda: is_not_found(service.lookup(domain, "1001")))


def test_bracketed_api_write_is_applied_precisely(
    service: Service, client: redis.Redis, domain: str
) -> None:
    key = redis_keys.extensions(domain)
    client.hset(
        key, mapping={"1000": doc(param={"password": "a"}), "1001": doc(param={"password": "b"})}
    )
    assert password_of(service.lookup(domain, "1000")) == "a"
    assert password_of(service.lookup(domain, "1001")) == "b"
    misses = service.cache_count("miss")
    change = DirectoryChange("extension", "update", domain, "1000", alias="al")
    with client.pipeline(transaction=True) as pipe:
        pipe.publish(redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, domain)
        pipe.hset(key, "1000", doc(param={"password": "c"}, attribute={"number-alias": "al"}))
        pipe.publish(redis_keys.DIRECTORY_CHANGES_CHANNEL, change.to_json())
        pipe.execute()
    eventually(lambda: password_of(service.lookup(domain, "1000")) == "c")
    assert password_of(service.lookup(domain, "AL")) == "c"  # alias index updated in place
    assert password_of(service.lookup(domain, "1001")) == "b"
    assert service.cache_count("miss") == misses  # the domain was not reloaded


def test_template_change_reaches_every_extension_using_it(
    service: Service, client: redis.Redis, domain: str
) -> None:
    template = f"tpl-{domain}"
    client.hset(redis_keys.TEMPLATES, template, doc(param={"password": "t1"}, variable={"v": "1"}))
    client.hset(
        redis_keys.extensions(domain),
        mapping={
            "1000": doc(template=template),
            "1001": doc(template=template, param={"password": "own"}),
        },
    )
    assert password_of(service.lookup(domain, "1000")) == "t1"
    assert password_of(service.lookup(domain, "1001")) == "own"
    client.hset(redis_keys.TEMPLATES, template, doc(param={"password": "t2"}, variable={"v": "2"}))
    eventually(lambda: password_of(service.lookup(domain, "1000")) == "t2")
    user = parse_user(service.lookup(domain, "1001"))[2]
    assert name_values(user, "params", "param") == {"password": "own"}
    assert name_values(user, "variables", "variable") == {"v": "2"}


def test_domain_settings_and_multi_domain(
    service: Service, client: redis.Redis, domain: str
) -> None:
    other = "other-" + domain
    client.hset(redis_keys.extensions(domain), "1000", doc(param={"password": "here"}))
    client.hset(redis_keys.extensions(other), "1000", doc(param={"password": "there"}))
    assert password_of(service.lookup(domain, "1000")) == "here"
    assert password_of(service.lookup(other, "1000")) == "there"
    client.hset(redis_keys.DOMAINS, domain, doc(param={"dial-string": "{mine}"}))

    def domain_params() -> dict[str, str]:
        _, element, _ = parse_user(service.lookup(domain, "1000", action="user_call"))
        return name_values(element, "params", "param")

    eventually(lambda: domain_params() == {"dial-string": "{mine}"})
    _, element, _ = parse_user(service.lookup(other, "1000", action="user_call"))
    assert "sofia_contact" in name_values(element, "params", "param")["dial-string"]


def test_broken_json_only_breaks_that_extension_and_logs_no_secret(
    service: Service, client: redis.Redis, domain: str
) -> None:
    key = redis_keys.extensions(domain)
    client.hset(
        key,
        mapping={
            "1000": '{"param": {"password": "Sup3rSecret"',
            "1001": doc(param={"password": "ok"}),
        },
    )
    assert is_not_found(service.lookup(domain, "1000"))
    assert password_of(service.lookup(domain, "1001")) == "ok"
    errors = [e for e in service.logs() if e["level"] == "ERROR" and e.get("redis_key") == key]
    assert errors and errors[-1]["redis_field"] == "1000"
    assert "Sup3rSecret" not in service.log_path.read_text()


def test_unknown_domain_and_user_are_not_found(service: Service, domain: str) -> None:
    assert is_not_found(service.lookup(domain, "1000"))
