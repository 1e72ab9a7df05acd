"""The real event service writes FreeSWITCH state through Sentinel and through a Cluster."""

from __future__ import annotations

import pytest

from cti.redis_client import connect, with_password
from tests.eslserver import FakeFreeSwitch, fixture_frames
from tests.redis_ha.services import event_service
from tests.redis_ha.topology import SERVER_PASSWORD, Cluster, SentinelSetup, poll


def _registrations_written(redis_url: str, timeout: float = 10, password: str = "") -> None:
    fs = FakeFreeSwitch().start()
    db = connect(
        with_password(redis_url, password) if password else redis_url, decode_responses=True
    )
    try:
        with event_service(redis_url, fs.address, password):
            fs.wait_subscribed()
            fs.send_frames(fixture_frames()[:2])  # two sofia::register events
            poll("2 registrations in Redis", lambda: db.hlen("registrations") == 2, timeout)
            assert {"1000", "1001"} <= set(db.hkeys("registrations"))
    finally:
        db.close()
        fs.stop()


def test_event_service_writes_through_sentinel(
    sentinel_setup: SentinelSetup, sentinel_url: str
) -> None:
    _registrations_written(sentinel_setup.url_without_server_password, password=SERVER_PASSWORD)


@pytest.mark.xfail(
    strict=True,
    reason="event_service's one MULTI/EXEC per batch spans the seed keys 'registrations' and "
    "'calls', their derived keys and the lease key: different cluster slots (CROSSSLOT)",
)
def test_event_service_writes_through_cluster(cluster: Cluster, cluster_url: str) -> None:
    _registrations_written(cluster_url, timeout=4)  # its first write fails at once
