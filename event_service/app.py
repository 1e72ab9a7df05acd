"""Composition root of the event service: builds every part from the settings and runs
them until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

import redis

from cti import redis_client
from cti.config import Settings, load_settings
from cti.logs import configure_logging
from cti.startup import refuse_to_start, report_redis
from event_service import keyspace, metrics, status_http
from event_service.directory_watch import DirectoryWatch
from event_service.flush import ChangeFlusher
from event_service.lease import replica_id
from event_service.placement import Membership
from event_service.worker import NodeWorker

log = logging.getLogger(__name__)

GRACE_SECONDS = 5.0


class EventService:
    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self.client = redis_client.connect(settings.redis_url)
        self.owner = replica_id()
        events = settings.events
        self.membership = Membership(
            self.client,
            self.owner,
            [node.address for node in events.nodes],
            events.lease_seconds,
            registration_hash=events.registration.hash,
            stop=self.stop_event,
            advertise=events.grpc.reachable_at,
        )
        self.workers = [
            NodeWorker(
                node,
                events,
                self.client,
                self.owner,
                self.stop_event,
                assigned=self.membership.mine,
            )
            for node in events.nodes
        ]
        metrics.NODES_OWNED.set_function(lambda: sum(w.holding for w in self.workers))
        self.flusher = ChangeFlusher(settings.redis_url, self._flush_all, self.stop_event)
        # Writes by hand -> change events (so flushes), led by one replica. Not on a Redis
        # Cluster: its keyspace notifications come per primary (docs/scale-out.md).
        self.directory_watch: DirectoryWatch | None = None
        if redis_client.mode_of(settings.redis_url) != "cluster":
            self.directory_watch = DirectoryWatch(
                settings.redis_url,
                self.owner,
                events.lease_seconds,
                registration_hash=events.registration.hash,
                stop=self.stop_event,
            )
        self.grpc_server: Any = None

    def _flush_all(self, commands: Sequence[tuple[str, str]]) -> None:
        for worker in self.workers:
            for command, argument in commands:
                worker.flush(command, argument)

    def readiness(self) -> status_http.Readiness:
        """Ready while Redis answers a PING; the nodes are reported, not required."""
        try:
            redis_ok = bool(self.client.ping())
        except redis.RedisError:
            redis_ok = False
        nodes = {
            w.address: status_http.NodeStatus(holding=w.holding, connected=w.connected.is_set())
            for w in self.workers
        }
        return status_http.Readiness(redis_ok, nodes)

    def start(self) -> None:
        # Bind first: a taken port refuses the start before any FreeSWITCH is touched.
        self.grpc_server = _grpc_server(
            self.settings, {w.address: w for w in self.workers}, self.owner
        )
        self.membership.start()
        for worker in self.workers:
            worker.start()
        self.flusher.start()
        if self.directory_watch is not None:
            self.directory_watch.start()
        if self.grpc_server is not None:
            self.grpc_server.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.grpc_server is not None:
            self.grpc_server.stop(GRACE_SECONDS).wait()
        for worker in self.workers:
            worker.join(timeout=GRACE_SECONDS)
        self.membership.join(timeout=GRACE_SECONDS)
        self.membership.leave()  # after the workers released their leases
        self.flusher.join(timeout=GRACE_SECONDS)
        if self.directory_watch is not None:
            self.directory_watch.join(timeout=GRACE_SECONDS)
        self.client.close()


def _grpc_server(settings: Settings, links: dict[str, NodeWorker], replica: str) -> Any:
    """The read/watch and call-control API (``event_service.grpc_api``, built separately);
    call control reaches FreeSWITCH through the node workers (``links``)."""
    try:
        from event_service import grpc_api
    except ImportError as exc:
        log.warning("gRPC API not available", extra={"error": str(exc)})
        return None
    return grpc_api.create_grpc_server(settings, links=links, replica=replica)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m event_service",
        description="FreeSWITCH registration and call state -> Redis (and gRPC).",
    )
    parser.add_argument("--config", help="cti.json path (default: $CTI_CONFIG or ./cti.json)")
    args = parser.parse_args(argv)
    configure_logging("events")
    return refuse_to_start("event service", lambda: run(args.config))


def run(config: str | None) -> int:
    settings = load_settings(config, service="events")
    if redis_client.mode_of(settings.redis_url) == "cluster":
        keyspace.check_one_slot(settings.events)
    service = EventService(settings)
    status = status_http.serve(settings.events.metrics_listen, service.readiness)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        service.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    report_redis(settings.redis_url, "FreeSWITCH state is not recorded")
    service.start()
    log.info(
        "event service started",
        extra={
            "nodes": [n.address for n in settings.events.nodes],
            "grpc": settings.events.grpc.listen,
            # where the other replicas forward call control for this one's nodes
            "advertise": settings.events.grpc.reachable_at or "none (wildcard listen)",
            "metrics": settings.events.metrics_listen,
        },
    )
    service.stop_event.wait()
    service.stop()
    status.shutdown()
    log.info("event service stopped")
    return 0
