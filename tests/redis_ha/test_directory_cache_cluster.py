"""The directory cache on a real 3-master Redis Cluster: one subscription per primary, so a
write on any node reaches the cache while it is caching (``GET /metrics`` hit counters)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from functools import partial

import pytest
import redis

from cti import redis_keys
from cti.changes import DirectoryChange
from cti.redis_client import connect
from directory_service.api.write_plan import Bracket
from directory_service.lookup.notify_nodes import ClusterPrimaries
from tests.directory.service import Service, name_values, parse_user, until
from tests.redis_ha.services import directory_service
from tests.redis_ha.topology import Cluster, client, poll, redis_cluster

DOMAINS = [f"d{i}.example" for i in range(9)]


def _extension(password: str) -> str:
    return json.dumps({"param": {"password": password}, "variable": {}, "attribute": {}})


def _password(service: Service, domain: str, user: str = "1000") -> str:
    found = parse_user(service.lookup(domain, user))[2]
    return name_values(found, "params", "param")["password"]


def _has_password(service: Service, domain: str, user: str, password: str) -> bool:
    return _password(service, domain, user) == password


def _owner(cluster_url: str, domain: str) -> redis.Redis:
    """A plain client to the primary holding ``domain``'s hash: a write "by hand" there."""
    db = connect(cluster_url)
    try:
        port = int(db.get_node_from_key(redis_keys.extensions(domain)).port)  # type: ignore[attr-defined]
    finally:
        db.close()
    return client(port)


def _owner_ports(cluster_url: str, domains: list[str]) -> set[int]:
    return {int(_owner(cluster_url, d).connection_pool.connection_kwargs["port"]) for d in domains}


def test_the_listener_finds_every_primary(cluster: Cluster) -> None:
    async def addresses() -> set[tuple[str, int]]:
        nodes = ClusterPrimaries(cluster.url)  # one seed node in the URL
        clients = await nodes.discover()
        try:
            found = set()
            for node in clients:
                kwargs = node.connection_pool.connection_kwargs
                assert await node.ping()
                found.add((kwargs["host"], kwargs["port"]))
            return found
        finally:
            await nodes.release(clients)
            await nodes.aclose()

    assert asyncio.run(addresses()) == {("127.0.0.1", port) for port in cluster.ports}


def test_hand_writes_on_every_primary_reach_the_cache(cluster: Cluster, cluster_url: str) -> None:
    assert _owner_ports(cluster_url, DOMAINS) == set(cluster.ports)  # all 3 nodes involved
    for domain in DOMAINS:
        _owner(cluster_url, domain).hset(redis_keys.extensions(domain), "1000", _extension("a"))
    with directory_service(cluster_url) as service:
        service.wait_until_live(timeout=10)
        for domain in DOMAINS:
            assert _password(service, domain) == "a"
        hits = service.cache_count("hit")
        for domain in DOMAINS:
            assert _password(service, domain) == "a"
        assert service.cache_count("hit") == hits + len(DOMAINS)  # cached, not re-read

        for domain in DOMAINS:  # by hand, each on the node that holds it
            _owner(cluster_url, domain).hset(redis_keys.extensions(domain), "1000", _extension("b"))
        for domain in DOMAINS:
            until(partial(_has_password, service, domain, "1000", "b"), timeout=5)

        hits = service.cache_count("hit")
        for domain in DOMAINS:
            assert _password(service, domain) == "b"
        assert service.cache_count("hit") == hits + len(DOMAINS)  # still caching
        assert service.metric("cti_directory_cache_live") == 1.0


def _api_style_write(node: redis.Redis, domain: str, user: str, password: str) -> None:
    """What the gRPC API sends for one extension update: one MULTI/EXEC on the node that
    holds the domain, bracketed by the write-begin and change publishes."""
    bracket = Bracket(
        domain,
        commands=[("HSET", redis_keys.extensions(domain), user, _extension(password))],
        changes=[DirectoryChange("extension", "update", domain, user)],
    )
    with node.pipeline(transaction=True) as pipe:
        for command in bracket.redis_commands():
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        pipe.execute()


def test_a_bracketed_write_is_applied_precisely(cluster: Cluster, cluster_url: str) -> None:
    domain = DOMAINS[0]
    owner = _owner(cluster_url, domain)
    other_domain = next(
        d for d in DOMAINS if _owner_ports(cluster_url, [d]) != _owner_ports(cluster_url, [domain])
    )
    for user in ("1000", "1001"):
        owner.hset(redis_keys.extensions(domain), user, _extension("a"))
    _owner(cluster_url, other_domain).hset(
        redis_keys.extensions(other_domain), "1000", _extension("a")
    )
    with directory_service(cluster_url) as service:
        service.wait_until_live(timeout=10)
        assert _password(service, domain, "1000") == _password(service, domain, "1001") == "a"
        assert _password(service, other_domain) == "a"
        misses = service.cache_count("miss")

        _api_style_write(owner, domain, "1000", "b")
        until(partial(_has_password, service, domain, "1000", "b"), timeout=5)
        assert _password(service, domain, "1001") == "a"
        assert service.cache_count("miss") == misses  # patched in place, not reloaded

        # The bracket also reached the other nodes (cluster bus) without their own writes
        # inside: a hand write there right after it is still seen.
        _owner(cluster_url, other_domain).hset(
            redis_keys.extensions(other_domain), "1000", _extension("c")
        )
        until(lambda: _password(service, other_domain) == "c", timeout=5)

        owner.hset(redis_keys.extensions(domain), "1001", _extension("d"))  # by hand: reload
        until(lambda: _password(service, domain, "1001") == "d", timeout=5)
        assert _password(service, domain, "1000") == "b"
        assert service.cache_count("miss") > misses


def _replication(port: int) -> dict[str, str]:
    return {k: str(v) for k, v in client(port).info("replication").items()}


def _logged(service: Service, text: str) -> bool:
    return any(text in str(record.get("message", "")) for record in service.logs())


@pytest.fixture(scope="module")
def replicated() -> Iterator[Cluster]:
    """A 3 masters + 3 replicas cluster."""
    with redis_cluster(masters=3, replicas=1) as cluster:
        yield cluster


def _every_seed(cluster: Cluster) -> str:
    """A URL naming every node as a seed (one of them is shut down below)."""
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in cluster.ports)


def _primary_and_replica(cluster: Cluster, key: str) -> tuple[int, int]:
    """The primary holding ``key`` and its replica, once that replica is in sync."""
    db = connect(_every_seed(cluster))
    try:
        primary = int(db.get_node_from_key(key).port)  # type: ignore[attr-defined]
    finally:
        db.close()

    def replica_in_sync() -> int | None:
        for port in cluster.ports:
            info = _replication(port)
            if (
                info["role"] == "slave"
                and int(info["master_port"]) == primary
                and info["master_link_status"] == "up"
            ):
                return port
        return None

    poll("a replica in sync", lambda: replica_in_sync() is not None)
    replica = replica_in_sync()
    assert replica is not None
    return primary, replica


def _follows_writes_on(service: Service, node: int, domain: str, password: str) -> None:
    client(node).hset(redis_keys.extensions(domain), "1000", _extension(password))
    until(partial(_has_password, service, domain, "1000", password), timeout=5)
    hits = service.cache_count("hit")
    assert _password(service, domain) == password
    assert service.cache_count("hit") == hits + 1  # caching again


def test_the_cache_follows_a_failover_that_keeps_the_old_primary_running(
    replicated: Cluster,
) -> None:
    """``CLUSTER FAILOVER``: the old primary stays up as a replica, so no connection drops;
    the listener notices the new primaries, resubscribes and caches again."""
    key = redis_keys.extensions(DOMAINS[0])
    primary, replica = _primary_and_replica(replicated, key)
    client(primary).hset(key, "1000", _extension("a"))
    with directory_service(_every_seed(replicated)) as service:
        service.wait_until_live(timeout=10)
        assert _password(service, DOMAINS[0]) == "a"

        client(replica).execute_command("CLUSTER", "FAILOVER")  # type: ignore[no-untyped-call]
        poll("the replica promoted", lambda: _replication(replica)["role"] == "master")
        poll("the listener to resubscribe", lambda: _logged(service, "primaries changed"))
        service.wait_until_live(timeout=10)
        _follows_writes_on(service, replica, DOMAINS[0], "b")


def test_the_cache_follows_a_primary_that_dies(replicated: Cluster) -> None:
    """Its subscription is lost: nothing cached until the replica is promoted and every
    primary is subscribed again."""
    key = redis_keys.extensions(DOMAINS[1])
    primary, replica = _primary_and_replica(replicated, key)
    client(primary).hset(key, "1000", _extension("a"))
    with directory_service(_every_seed(replicated)) as service:
        service.wait_until_live(timeout=10)
        assert _password(service, DOMAINS[1]) == "a"

        subprocess.run(
            ["redis-cli", "-p", str(primary), "shutdown", "nosave"], capture_output=True, timeout=10
        )
        poll("the subscription lost", lambda: _logged(service, "subscriber lost"))
        poll("the replica promoted", lambda: _replication(replica)["role"] == "master")
        service.wait_until_live(timeout=20)
        _follows_writes_on(service, replica, DOMAINS[1], "b")
