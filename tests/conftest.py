from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support import RedisServer, running_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session, with keyspace notifications on (as the
    directory cache wants); each test gets it flushed."""
    with running_redis("--notify-keyspace-events", "KEA") as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.process is None:  # a test stopped it to simulate an outage
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.config_set("notify-keyspace-events", "KEA")
    client.close()
    return redis_server.url
