"""Exponential backoff between reconnection attempts: the one retry schedule of both
services. Pure: the caller sleeps (``time``, ``asyncio`` or an ``Event.wait``)."""

from __future__ import annotations


class Backoff:
    """Delays ``first``, ``2 * first``, ... capped at ``limit``; :meth:`reset` once the
    connection works again, so the next outage starts short."""

    def __init__(self, first: float, limit: float) -> None:
        self.first, self.limit, self.current = first, limit, first

    def next(self) -> float:
        """The delay to wait now; the next one doubles (up to ``limit``)."""
        delay, self.current = self.current, min(self.current * 2, self.limit)
        return delay

    def reset(self) -> None:
        self.current = self.first
