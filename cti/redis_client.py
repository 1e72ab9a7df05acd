"""The one place Redis clients are made, from ``REDIS_URL``-style URLs.

Every service and tool calls these instead of ``redis.Redis.from_url`` so that deployment
options (timeouts, Sentinel, Cluster) are decided once.
"""

from __future__ import annotations

import redis
import redis.asyncio

SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0


def connect(url: str) -> redis.Redis:
    """A blocking client."""
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )


def connect_async(url: str) -> redis.asyncio.Redis:
    """An asyncio client."""
    return redis.asyncio.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )
