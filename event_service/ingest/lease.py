"""A Redis lease per FreeSWITCH node: only one replica consumes a node at a time.

``SET key owner NX PX ttl`` takes it. A :class:`LeaseKeeper` thread renews it every
``ttl/3``, independent of the thread that reads and applies events, so a long batch or a
slow reconcile never lets it lapse. A lease can still lapse while the whole process is
stalled (SIGSTOP, a host starving ordinary processes): a lapsed key is no takeover, so
whoever notices first (the keeper, or the next write transaction) takes it back with
``SET NX`` and the event socket stays open: nothing FreeSWITCH queued meanwhile is lost.
Only a lease that another replica actually holds ends consumption. Renewal and release
are compare-and-act Lua, so a replica never extends or deletes a lease another one holds.
The store re-checks the holder under WATCH inside every write, so a replica that lost the
lease cannot write stale state.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass

import redis

from cti import redis_keys

log = logging.getLogger(__name__)

_KEEP = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 2
end
return holder
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def replica_id() -> str:
    """Unique per process start; readable in ``redis-cli GET`` (host, pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Kept:
    """The outcome of one renewal."""

    held: bool
    retaken: bool = False
    """It had lapsed (nobody held it) and was taken back."""
    holder: str = ""
    """Who holds it when ``held`` is false."""


class Lease:
    def __init__(
        self,
        client: redis.Redis,
        node: str,
        owner: str,
        seconds: float,
        *,
        registration_hash: str,
    ) -> None:
        self.client = client
        self.node = node
        # In the registration hash's slot: the store WATCHes it in its transactions.
        self.key = redis_keys.node_lease(node, registration_hash)
        self.owner = owner
        self.ttl_ms = max(1, int(seconds * 1000))
        self._keep = client.register_script(_KEEP)
        self._release = client.register_script(_RELEASE)

    @property
    def renew_interval(self) -> float:
        return self.ttl_ms / 3000

    def acquire(self) -> bool:
        """Take the lease if free (or already ours)."""
        return self.keep().held

    def keep(self) -> Kept:
        """Extend the lease if ours, take it back if it lapsed, else name its holder."""
        result = self._keep(keys=[self.key], args=[self.owner, self.ttl_ms])
        if result == 1:
            return Kept(held=True)
        if result == 2:
            return Kept(held=True, retaken=True)
        holder = result.decode(errors="replace") if isinstance(result, bytes) else str(result)
        return Kept(held=False, holder=holder)

    def renew(self) -> bool:
        return self.keep().held

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.owner])

    def held_by_us(self, value: bytes | None) -> bool:
        return value is not None and value.decode() == self.owner


class LeaseKeeper(threading.Thread):
    """Renews one lease every ``ttl/3`` on its own thread until stopped or until another
    replica holds it (then :attr:`lost` is set and :attr:`holder` names that replica)."""

    def __init__(self, lease: Lease, stop: threading.Event) -> None:
        super().__init__(name=f"lease-{lease.node}", daemon=True)
        self.lease = lease
        self.lost = threading.Event()
        self.holder = ""
        self._stop = stop
        self._done = threading.Event()
        self._warned = False

    def cancel(self) -> None:
        self._done.set()

    def run(self) -> None:
        interval = self.lease.renew_interval
        while not self._stop.is_set() and not self._done.wait(interval):
            try:
                kept = self.lease.keep()
            except redis.RedisError as exc:
                # The store's writes fail too and the worker handles the outage; the
                # lease is taken back (or found taken) once Redis answers again.
                if not self._warned:
                    log.warning(
                        "cannot renew the lease (%s), retrying",
                        exc.__class__.__name__,
                        extra={"node": self.lease.node},
                    )
                    self._warned = True
                continue
            self._warned = False
            if kept.retaken:
                log.warning(
                    "lease had lapsed (this replica was stalled); taken back, connection kept",
                    extra={"node": self.lease.node},
                )
            if not kept.held:
                self.holder = kept.holder
                self.lost.set()
                return
