"""Fixtures the event-service tests share: a fake FreeSWITCH and a text-mode Redis client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.eslserver import FakeFreeSwitch


@pytest.fixture
def fs() -> Iterator[FakeFreeSwitch]:
    server = FakeFreeSwitch().start()
    yield server
    server.stop()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    yield connection
    connection.close()
