"""A Redis lease per FreeSWITCH node: only one replica consumes a node at a time.

``SET key owner NX PX ttl`` takes it; the owner renews it well before it expires and
releases it on shutdown, both with compare-and-act Lua so a replica never extends or
deletes a lease another one took over. If the owner dies, the lease expires and another
replica's next attempt (every ``ttl/3``) succeeds. The store also checks the lease under
WATCH inside every write, so a replica that lost it cannot write stale state.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis

from cti import redis_keys

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
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
        # In the registration hash's slot: the store WATCHes it in its transactions.
        self.key = redis_keys.node_lease(node, registration_hash)
        self.owner = owner
        self.ttl_ms = max(1, int(seconds * 1000))
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def renew_interval(self) -> float:
        return self.ttl_ms / 3000

    def acquire(self) -> bool:
        """Take the lease if free (or already ours)."""
        if self.client.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.owner])

    def held_by_us(self, value: bytes | None) -> bool:
        return value is not None and value.decode() == self.owner
