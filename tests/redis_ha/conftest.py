from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_ha.topology import Cluster, SentinelSetup, client, redis_cluster, redis_sentinel


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with redis_cluster(masters=3) as running:
        yield running


@pytest.fixture
def cluster_url(cluster: Cluster) -> str:
    for port in cluster.ports:
        client(port).flushall()
    return cluster.url


@pytest.fixture(scope="session")
def sentinel_setup() -> Iterator[SentinelSetup]:
    with redis_sentinel(sentinels=3) as running:
        yield running


@pytest.fixture
def sentinel_url(sentinel_setup: SentinelSetup) -> str:
    sentinel_setup.wait_settled()
    sentinel_setup.server(sentinel_setup.master_port()).flushall()
    return sentinel_setup.url
