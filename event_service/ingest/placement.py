"""Which event-service replica consumes which FreeSWITCH node.

Every replica is configured with all nodes. Each announces itself in a Redis sorted set
(member = its id, score = when its announcement expires, in Redis's own clock) every
``lease_seconds / 3`` and reads the live members back in the same script. From the same
node list and the same live set every replica computes the same assignment
(:func:`assign`): rendezvous hashing with a cap of ``ceil(N/M)`` nodes per replica, so the
shares are even and a replica's arrival or departure moves only the nodes it must. A
replica consumes only its own nodes (the node lease still arbitrates the moment two
views differ) and releases, after applying what it read, the ones that move away.
A replica that dies without leaving disappears from the set after ``lease_seconds``, when
its node leases have lapsed too. Beside its membership each replica keeps the address its
gRPC API is reachable at (``events.grpc.advertise``; a hash, same heartbeat, same expiry),
so call control for a node can be forwarded to its holder (``control_forward``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
from collections.abc import Sequence

import redis

from cti import redis_keys
from event_service import metrics

log = logging.getLogger(__name__)

_ANNOUNCE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
for _, member in ipairs(expired) do
    redis.call('HDEL', KEYS[2], member)
end
if ARGV[3] == '1' then
    redis.call('ZADD', KEYS[1], now_ms + ttl, ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ttl * 2)
    if ARGV[4] ~= '' then
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
        redis.call('PEXPIRE', KEYS[2], ttl * 2)
    end
else
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[2], ARGV[1])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def _rank(replica: str, node: str) -> bytes:
    return hashlib.sha256(f"{replica}\0{node}".encode()).digest()


def assign(nodes: Sequence[str], replicas: Sequence[str]) -> dict[str, str]:
    """node -> replica (pure, deterministic from the two sets, whatever their order).

    Each node goes to the highest-ranked replica for it that still has room under
    ``ceil(N/M)``; nodes are placed in a fixed order (by their own hash) so every replica
    computes the same answer."""
    members = sorted(set(replicas))
    if not members:
        return {}
    cap = math.ceil(len(set(nodes)) / len(members))
    load = dict.fromkeys(members, 0)
    placed: dict[str, str] = {}
    for node in sorted(set(nodes), key=lambda n: hashlib.sha256(n.encode()).digest()):
        for replica in sorted(members, key=lambda r: _rank(r, node), reverse=True):
            if load[replica] < cap:
                placed[node] = replica
                load[replica] += 1
                break
    return placed


class Membership(threading.Thread):
    """Announces this replica and keeps the live set; answers "is this node mine?"."""

    def __init__(
        self,
        client: redis.Redis,
        owner: str,
        nodes: Sequence[str],
        seconds: float,
        *,
        registration_hash: str,
        stop: threading.Event,
        advertise: str = "",
    ) -> None:
        super().__init__(name="replica-membership", daemon=True)
        self.client = client
        self.owner = owner
        self.nodes = tuple(nodes)
        self.ttl_ms = max(1, int(seconds * 1000))
        self.key = redis_keys.event_replicas(registration_hash)
        self.addresses_key = redis_keys.event_replica_addresses(registration_hash)
        self.advertise = advertise
        self.ready = threading.Event()
        self.stop_event = stop
        self._announce = client.register_script(_ANNOUNCE)
        self._lock = threading.Lock()
        self._live: tuple[str, ...] = ()
        self._mine: frozenset[str] = frozenset()
        self._warned = False

    @property
    def interval(self) -> float:
        return self.ttl_ms / 3000

    @property
    def live(self) -> tuple[str, ...]:
        with self._lock:
            return self._live

    def mine(self, node: str) -> bool:
        """``False`` until the first announcement has been read back."""
        with self._lock:
            return node in self._mine

    def announce(self, present: bool = True) -> None:
        """One heartbeat (or, with ``present=False``, the leave): recompute the share."""
        raw = self._announce(
            keys=[self.key, self.addresses_key],
            args=[self.owner, self.ttl_ms, "1" if present else "0", self.advertise],
        )
        live = tuple(sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw))
        placed = assign(self.nodes, live) if present else {}
        mine = frozenset(n for n, r in placed.items() if r == self.owner)
        with self._lock:
            before, self._live, self._mine = self._live, live, mine
        if live != before:
            log.info(
                "event replicas changed: %d live, %d of %d nodes are this replica's",
                len(live),
                len(mine),
                len(self.nodes),
                extra={"replicas": list(live)},
            )
        metrics.REPLICAS_LIVE.set(len(live))
        metrics.NODES_ASSIGNED.set(len(mine))
        self.ready.set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.announce()
                self._warned = False
            except redis.RedisError as exc:
                # Keep the last view: the node leases (and the store's writes) fail too
                # while Redis is away, and decide again once it answers.
                if not self._warned:
                    log.warning(
                        "cannot announce this replica (%s), retrying", exc.__class__.__name__
                    )
                    self._warned = True
            self.stop_event.wait(self.interval)

    def leave(self) -> None:
        """Remove this replica at once (a clean stop): the others take its nodes at their
        next heartbeat instead of after ``lease_seconds``."""
        with contextlib.suppress(redis.RedisError):
            self.announce(present=False)
