"""A node's lease as its worker holds it: taken, kept by a :class:`LeaseKeeper` thread,
given up when another replica holds it, handed over when the node moves to another
replica's share, released when the worker stops."""

from __future__ import annotations

import contextlib
import logging
import threading

import redis

from event_service import metrics
from event_service.ingest.lease import Lease, LeaseKeeper
from event_service.ingest.store import LeaseLost

log = logging.getLogger(__name__)


class NodeLease:
    def __init__(self, lease: Lease, stop: threading.Event) -> None:
        self.lease = lease
        self.address = lease.node
        self._stop = stop
        self._keeper: LeaseKeeper | None = None

    @property
    def holding(self) -> bool:
        """This replica holds the node's lease (it consumes the node, or tries to)."""
        return self._keeper is not None

    def take(self) -> bool:
        """Take the node's lease and start renewing it on its own thread."""
        if not self.lease.acquire():
            return False
        log.info("consuming FreeSWITCH node (taken over)", extra={"node": self.address})
        metrics.LEASE_ACQUIRED.labels(self.address).inc()
        metrics.NODE_MOVES.labels(self.address, "taken").inc()
        metrics.LEASE_HELD.labels(self.address).set(1)
        self._keeper = LeaseKeeper(self.lease, self._stop)
        self._keeper.start()
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLost` once the keeper found another replica holding it."""
        keeper = self._keeper
        if keeper is not None and keeper.lost.is_set():
            raise LeaseLost(self.address, keeper.holder)

    def give_up(self, holder: str) -> None:
        log.warning(
            "lease held by another replica (%s): stopped consuming this node",
            holder or "unknown",
            extra={"node": self.address, "holder": holder},
        )
        self._stop_keeping()
        metrics.LEASE_HELD.labels(self.address).set(0)

    def hand_over(self) -> None:
        """The node moved to another replica's share: release its lease at once (what was
        read is applied), so the new owner takes it without waiting for it to lapse."""
        self.release()
        metrics.NODE_MOVES.labels(self.address, "released").inc()
        log.info(
            "released FreeSWITCH node: it moved to another replica's share",
            extra={"node": self.address},
        )

    def release(self) -> None:
        self._stop_keeping()
        with contextlib.suppress(redis.RedisError):
            self.lease.release()
        metrics.LEASE_HELD.labels(self.address).set(0)

    def _stop_keeping(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
