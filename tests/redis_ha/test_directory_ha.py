"""The real directory service through a Redis Cluster and through Sentinel: it answers,
sees writes made by hand on any node, and rides out a Sentinel failover by itself."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from functools import partial

import pytest
import redis.exceptions

from cti import redis_keys
from cti.redis_client import connect
from tests.directory.service import Service, name_values, parse_user, until
from tests.redis_ha.services import directory_service
from tests.redis_ha.topology import SERVER_PASSWORD, Cluster, SentinelSetup, poll

_counter = itertools.count()


def _extension(password: str) -> str:
    return json.dumps({"param": {"password": password}, "variable": {}, "attribute": {}})


def _password(service: Service, domain: str, user: str) -> str:
    return name_values(parse_user(service.lookup(domain, user))[2], "params", "param")["password"]


def _has_password(service: Service, domain: str, password: str) -> bool:
    return _password(service, domain, "1000") == password


@pytest.fixture(scope="module")
def sentinel_service(sentinel_setup: SentinelSetup) -> Iterator[Service]:
    # The server password comes the Kubernetes way: REDIS_PASSWORD beside a URL without it.
    with directory_service(sentinel_setup.url_without_server_password, SERVER_PASSWORD) as service:
        service.wait_until_live(timeout=20)
        yield service


@pytest.mark.xfail(
    strict=True,
    reason="directory_service does not support Redis Cluster yet: its invalidation listener "
    "reads client.connection_pool (RedisCluster has none) and subscribes to keyspace "
    "notifications on one connection, while each cluster node publishes only its own keys'",
)
def test_directory_answers_and_follows_hand_writes_on_every_cluster_node(
    cluster: Cluster, cluster_url: str
) -> None:
    with directory_service(cluster_url) as cluster_service:
        cluster_service.wait_until_live(timeout=10)
        _hand_writes_are_seen(cluster_url, cluster_service)


def _hand_writes_are_seen(url: str, cluster_service: Service) -> None:
    db = connect(url)
    domains = [f"c{next(_counter)}.example" for _ in range(12)]  # spread over all 3 masters
    for domain in domains:
        db.hset(redis_keys.extensions(domain), "1000", _extension("first"))
    for domain in domains:
        assert _password(cluster_service, domain, "1000") == "first"
    for domain in domains:  # now cached; a write by hand must still be seen
        db.hset(redis_keys.extensions(domain), "1000", _extension("second"))
    for domain in domains:
        until(partial(_has_password, cluster_service, domain, "second"), timeout=5)
    db.close()


def test_directory_answers_through_sentinel_across_a_failover(
    sentinel_setup: SentinelSetup, sentinel_service: Service
) -> None:
    db = connect(sentinel_setup.url)
    domain = f"s{next(_counter)}.example"
    db.hset(redis_keys.extensions(domain), "1000", _extension("before"))
    db.wait(1, 1000)
    assert _password(sentinel_service, domain, "1000") == "before"

    old_master = sentinel_setup.failover()
    answered = 0

    def lookup_ok() -> bool:
        nonlocal answered
        status, _body = sentinel_service.post(
            "section=directory&tag_name=domain&key_name=name"
            f"&key_value={domain}&action=sip_auth&key=id&user=1000&domain={domain}"
        )
        answered += status == 200
        return sentinel_setup.master_port() != old_master

    poll("a new master", lookup_ok, timeout=30)
    assert answered > 0  # lookups kept being answered during the failover

    def write_after() -> bool:
        try:
            db.hset(redis_keys.extensions(domain), "1000", _extension("after"))
            return int(db.wait(1, 500)) >= 1
        except (redis.exceptions.ConnectionError, redis.exceptions.ResponseError):
            return False

    poll("a write through the new master", write_after, timeout=30)
    # The service found the new master and its cache follows the write made there.
    until(lambda: _password(sentinel_service, domain, "1000") == "after", timeout=20)
    db.close()
