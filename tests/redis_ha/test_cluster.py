"""``connect(url)`` / ``connect_async(url)`` against a real 3-master Redis Cluster."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.exceptions
from redis.crc import key_slot

from cti import redis_keys
from cti.redis_client import connect, connect_async
from tests.redis_ha.topology import Cluster, client, poll


def test_writes_spread_over_all_masters_and_read_back(cluster: Cluster, cluster_url: str) -> None:
    db = connect(cluster_url)
    domains = [f"d{i}.example" for i in range(60)]
    for domain in domains:
        db.hset(redis_keys.extensions(domain), "1000", '{"param": {"password": "x"}}')
    for domain in domains:
        assert db.hget(redis_keys.extensions(domain), "1000") == b'{"param": {"password": "x"}}'
    # Seeded from one node, the client found the others: every master holds some domains.
    assert all(client(port).dbsize() > 0 for port in cluster.ports)
    db.close()


def test_transaction_on_one_domains_keys(cluster_url: str) -> None:
    """A directory write (extension + alias + template count) commits atomically on a
    cluster because the derived keys carry the ``{cti_exten@<domain>}`` hash tag."""
    db = connect(cluster_url)
    domain = "tenant.example"
    with db.pipeline(transaction=True) as pipe:
        pipe.hset(redis_keys.extensions(domain), "1001", "{}")
        pipe.hset(redis_keys.aliases(domain), "alice", "1001")
        pipe.hincrby(redis_keys.template_refs(domain), "agent", 1)
        assert pipe.execute() == [1, 1, 1]
    assert db.hget(redis_keys.aliases(domain), "alice") == b"1001"
    assert db.hget(redis_keys.template_refs(domain), "agent") == b"1"
    db.close()


def test_watch_detects_a_concurrent_write(cluster_url: str) -> None:
    db, other = connect(cluster_url), connect(cluster_url)
    key = redis_keys.extensions("watched.example")
    db.hset(key, "1000", "v1")
    with db.pipeline(transaction=True) as pipe:
        pipe.watch(key)  # type: ignore[no-untyped-call]
        other.hset(key, "1000", "v2")  # lands between WATCH and EXEC
        pipe.multi()
        pipe.hset(key, "1000", "mine")
        pipe.hset(redis_keys.aliases("watched.example"), "x", "1000")
        with pytest.raises(redis.exceptions.WatchError):
            pipe.execute()
    assert db.hget(key, "1000") == b"v2"
    assert db.exists(redis_keys.aliases("watched.example")) == 0
    db.close()
    other.close()


def test_cross_slot_transaction_is_refused_not_split(cluster_url: str) -> None:
    """Keys of two domains are (here) in different slots: the client must refuse, never
    silently run half of a transaction on each node."""
    a, b = redis_keys.extensions("a.example"), redis_keys.extensions("b.example")
    assert key_slot(a.encode()) != key_slot(b.encode())
    db = connect(cluster_url)
    with pytest.raises(redis.exceptions.RedisClusterException), db.pipeline(True) as pipe:
        pipe.hset(a, "1", "x")
        pipe.hset(b, "1", "x")
        pipe.execute()
    assert db.exists(a) == 0 and db.exists(b) == 0
    db.close()


def test_publish_reaches_a_subscriber_on_another_node(cluster: Cluster, cluster_url: str) -> None:
    """Change events are classic pub/sub, which a cluster forwards to every node."""
    subscriber = client(cluster.ports[-1]).pubsub()  # type: ignore[no-untyped-call]
    subscriber.subscribe(redis_keys.DIRECTORY_CHANGES_CHANNEL)
    db = connect(cluster_url)
    received: list[str] = []

    def delivered() -> bool:
        db.publish(redis_keys.DIRECTORY_CHANGES_CHANNEL, "hello")
        message = subscriber.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message:
            received.append(message["data"])
        return bool(received)

    poll("a published change event", delivered, timeout=10)
    assert received[0] == "hello"
    subscriber.close()
    db.close()


def test_asyncio_client_reads_writes_and_transacts(cluster: Cluster, cluster_url: str) -> None:
    async def scenario() -> None:
        db = connect_async(cluster_url)
        try:
            for i in range(30):
                await db.hset(redis_keys.extensions(f"a{i}.example"), "1000", str(i))
            values = [
                await db.hget(redis_keys.extensions(f"a{i}.example"), "1000") for i in range(30)
            ]
            assert values == [str(i).encode() for i in range(30)]
            async with db.pipeline(transaction=True) as pipe:
                pipe.hset(redis_keys.extensions("async.example"), "1000", "{}")
                pipe.hset(redis_keys.aliases("async.example"), "bob", "1000")
                assert await pipe.execute() == [1, 1]
        finally:
            await db.aclose()

    asyncio.run(scenario())
    assert all(client(port).dbsize() > 0 for port in cluster.ports)
    check = connect(cluster_url)
    assert check.hget(redis_keys.aliases("async.example"), "bob") == b"1000"
    check.close()
