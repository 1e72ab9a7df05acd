"""``connect(url)`` / ``connect_async(url)`` through Redis Sentinel, across a failover.

Redis replication is asynchronous: a write the old master acknowledged alone can vanish in
a failover. A write is *acknowledged* here, as Redis documents it, when ``WAIT 1`` confirms
a replica holds it; those must all survive, and the same client object must find the new
master by itself (no restart, no new client).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis
import redis.asyncio
import redis.exceptions

from cti import redis_keys
from cti.redis_client import connect, connect_async
from tests.redis_ha.topology import SentinelSetup, poll

WAIT_MS = 500


def test_reads_and_writes_go_to_the_master(
    sentinel_setup: SentinelSetup, sentinel_url: str
) -> None:
    db = connect(sentinel_url)
    key = redis_keys.extensions("sentinel.example")
    db.hset(key, "1000", "{}")
    assert db.hget(key, "1000") == b"{}"
    assert sentinel_setup.server(sentinel_setup.master_port()).hget(key, "1000") == "{}"
    db.close()


def _write_acknowledged(db: redis.Redis, key: str, value: str) -> bool:
    """SET then WAIT for one replica; any error or a lone master's ack is "not acked"."""
    try:
        db.set(key, value)
        return int(db.wait(1, WAIT_MS)) >= 1
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False
    except redis.exceptions.ResponseError:  # READONLY from a demoted master
        return False


def test_failover_during_a_write_loop_loses_no_acknowledged_write(
    sentinel_setup: SentinelSetup, sentinel_url: str
) -> None:
    db = connect(sentinel_url)
    acknowledged: list[str] = []
    attempts = 0

    def write() -> bool:
        nonlocal attempts
        attempts += 1
        key = f"cti:ha:{attempts}"
        ok = _write_acknowledged(db, key, str(attempts))
        if ok:
            acknowledged.append(key)
        else:
            time.sleep(0.05)
        return ok

    with asyncio.Runner() as loop:
        # An asyncio client made before the failover must follow it too.
        async_db = connect_async(sentinel_url)
        assert loop.run(_async_set(async_db, "before"))

        for _ in range(50):
            write()
        assert len(acknowledged) == 50  # a healthy pair acknowledges everything
        old_master = sentinel_setup.failover()

        def moved_on() -> bool:
            write()
            return sentinel_setup.master_port() != old_master

        poll("the sentinels to name a new master", moved_on, timeout=30)
        before = len(acknowledged)
        # Recovery by itself: the same client object writes to the new master.
        poll("writes through the new master", lambda: write() and len(acknowledged) >= before + 20)
        new_master = sentinel_setup.master_port()

        async def async_write_after() -> int:
            await async_db.set("cti:ha:async", "after")
            return int((await async_db.info("server"))["tcp_port"])

        async_port = _first_success(lambda: loop.run(async_write_after()))
        loop.run(async_db.aclose())

    assert new_master != old_master
    assert async_port == new_master
    survivors = sentinel_setup.server(new_master)
    assert survivors.info("replication")["role"] == "master"
    missing = [key for key in acknowledged if survivors.get(key) is None]
    assert missing == []
    assert survivors.get(acknowledged[-1]) == acknowledged[-1].rsplit(":", 1)[1]
    assert survivors.get("cti:ha:async") == "after"
    db.close()


async def _async_set(db: redis.asyncio.Redis, value: str) -> bool:
    return bool(await db.set("cti:ha:async", value))


def _first_success(action: Callable[[], int], timeout: float = 20.0) -> int:
    """The async client may see one killed connection before it re-discovers the master."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (redis.exceptions.ConnectionError, redis.exceptions.ResponseError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
