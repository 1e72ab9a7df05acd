from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import RedisServer, reset_redis, running_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session, with keyspace notifications on (as the
    directory cache wants); each test gets it flushed."""
    with running_redis("--notify-keyspace-events", "KEA") as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    reset_redis(redis_server)
    return redis_server.url
