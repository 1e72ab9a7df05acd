"""Which Redis servers the cache's invalidation listener must subscribe to.

A single server (or the Sentinel master, which the client follows by itself) publishes
every keyspace notification. A Redis Cluster node publishes them only for the keys it
holds, so the listener needs one plain connection per primary, and a new subscription
whenever failover or resharding changes which nodes are primaries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, cast

import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from cti.redis_client import connect_async, connect_cluster_node_async, mode_of

TOPOLOGY_CHECK_SECONDS = 1.0
"""How often the cluster's primaries are compared with the subscribed ones: after a
failover that leaves the old primary running (as a replica) nothing else tells us, and
writes on the new primary would go unseen until then."""

Address = tuple[str, int]


class NotifyNodes(Protocol):
    """The servers to subscribe to, and when that set is no longer right."""

    @property
    def db(self) -> int: ...

    async def discover(self) -> list[redis.asyncio.Redis]:
        """One client per server to subscribe to, as the topology is now."""
        ...

    async def changed(self) -> None:
        """Return once the servers :meth:`discover` found are no longer the right ones."""
        ...

    def canary_key(self, index: int, base: str) -> str:
        """``base``, made to live on the ``index``-th server :meth:`discover` returned (a
        node publishes notifications only for the keys it holds)."""
        ...

    async def release(self, clients: Sequence[redis.asyncio.Redis]) -> None:
        """Done with what :meth:`discover` returned (the subscription ended)."""
        ...

    async def aclose(self) -> None:
        """Done with it all (the listener stops)."""
        ...


class SingleServer:
    """One server or a Sentinel master: one client, reused across reconnects."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client

    @property
    def db(self) -> int:
        return int(self.client.connection_pool.connection_kwargs.get("db", 0))

    async def discover(self) -> list[redis.asyncio.Redis]:
        return [self.client]

    async def changed(self) -> None:
        await asyncio.get_running_loop().create_future()  # never: the client follows

    def canary_key(self, index: int, base: str) -> str:
        return base

    async def release(self, clients: Sequence[redis.asyncio.Redis]) -> None:
        return None

    async def aclose(self) -> None:
        await self.client.aclose()


class ClusterPrimaries:
    """Every primary of a Redis Cluster, each through its own plain client."""

    def __init__(self, url: str, check_every: float = TOPOLOGY_CHECK_SECONDS) -> None:
        self.url = url
        self.check_every = check_every
        # Used only for redis-py's topology discovery (CLUSTER SLOTS from any known node).
        self._cluster = cast(redis.asyncio.cluster.RedisCluster, connect_async(url))
        self._subscribed: frozenset[Address] = frozenset()

    @property
    def db(self) -> int:
        return 0  # a cluster has only database 0

    async def primaries(self) -> frozenset[Address]:
        """The primaries as the cluster says now (not as the client last saw them)."""
        await self._cluster.initialize()  # first time only
        await self._cluster.nodes_manager.initialize()  # every time: a fresh CLUSTER SLOTS
        return frozenset((node.host, int(node.port)) for node in self._cluster.get_primaries())

    async def discover(self) -> list[redis.asyncio.Redis]:
        self._subscribed = await self.primaries()
        clients = []
        for host, port in sorted(self._subscribed):
            client = connect_cluster_node_async(self.url, host, port)
            # No quiet reconnect (redis-py's default retries for seconds with backoff): a
            # primary that dies must darken the cache at once, before its replica takes
            # over and is written to. The listener reconnects and rediscovers instead.
            client.set_retry(Retry(NoBackoff(), 0))
            clients.append(client)
        return clients

    def canary_key(self, index: int, base: str) -> str:
        """``base{tag}`` with a hash tag whose slot the ``index``-th primary serves."""
        host, port = sorted(self._subscribed)[index]
        owned = {
            slot
            for slot, nodes in self._cluster.nodes_manager.slots_cache.items()
            if nodes and (nodes[0].host, int(nodes[0].port)) == (host, port)
        }
        for tag in range(100_000):
            key = f"{base}{{{tag}}}"
            if key_slot(key.encode()) in owned:
                return key
        return base  # a primary without slots: nothing of ours lives there

    async def changed(self) -> None:
        while True:
            await asyncio.sleep(self.check_every)
            if await self.primaries() != self._subscribed:
                return

    async def release(self, clients: Sequence[redis.asyncio.Redis]) -> None:
        for client in clients:
            await client.aclose()

    async def aclose(self) -> None:
        await self._cluster.aclose()


def notify_nodes(url: str) -> NotifyNodes:
    """What to subscribe to for ``url``'s topology (see :func:`cti.redis_client.mode_of`)."""
    if mode_of(url) == "cluster":
        return ClusterPrimaries(url)
    return SingleServer(connect_async(url))
