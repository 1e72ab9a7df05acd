"""Optimistic Redis transactions: ``WATCH`` some keys, read, queue, ``EXEC``; start over when
a watched key changed meanwhile. The one retry loop of both services (same attempts, same
error when giving up)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import redis
from redis.client import Pipeline

from cti.api_errors import deadline_exceeded, too_much_contention

T = TypeVar("T")

MAX_ATTEMPTS = 100
"""Conflicting attempts before giving up: each conflict means another writer committed, so
this many in a row is a hot key, not bad luck."""


def watch_transaction(
    client: redis.Redis,
    watch: Sequence[str],
    body: Callable[[Pipeline], T],
    *,
    name: str,
    deadline: float | None = None,
    on_conflict: Callable[[], None] | None = None,
) -> T:
    """``body(pipe)`` on a transactional pipeline that already watches ``watch``: it reads,
    calls ``pipe.multi()``, queues and ``pipe.execute()``s (or returns early, writing
    nothing). Retried from the start on ``WatchError`` (``on_conflict`` counts it); after
    :data:`MAX_ATTEMPTS` conflicts, ABORTED ``CONCURRENT_WRITES`` naming ``name``; past
    ``deadline`` (``time.monotonic``), DEADLINE_EXCEEDED."""
    for _ in range(MAX_ATTEMPTS):
        if deadline is not None and time.monotonic() > deadline:
            raise deadline_exceeded(name)
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*watch)  # type: ignore[no-untyped-call]
                return body(pipe)
            except redis.WatchError:
                if on_conflict is not None:
                    on_conflict()
    raise too_much_contention(name)
