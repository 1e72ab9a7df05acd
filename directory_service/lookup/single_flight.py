"""Concurrent misses share one load. Pure asyncio: no I/O of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """At most one load per key at a time: the first caller starts it, later callers await
    the same task. Each waits through :func:`asyncio.shield`, so a caller that is cancelled
    (a lookup past its deadline) does not cancel the load the others wait for. A finished
    load is forgotten; :meth:`forget` drops one early (an invalidation: the next caller
    starts a new load, while those already waiting still get the old one's result)."""

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[V]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._tasks

    async def run(self, key: K, start: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The result of the load of ``key`` in flight, else of ``start()`` (called now)."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(start())
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def forget(self, key: K) -> None:
        self._tasks.pop(key, None)

    def clear(self) -> None:
        self._tasks.clear()

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        """Unregister ``task`` unless a newer load took its place."""
        if self._tasks.get(key) is task:
            del self._tasks[key]
