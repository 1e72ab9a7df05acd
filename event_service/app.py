"""The event service's composition root: every client, store, servicer, worker and server
is built here from the settings, and nowhere else.

:func:`run` builds :class:`EventService` (the node workers that follow FreeSWITCH, the
membership that places nodes on replicas, the change flusher, the directory watch and the
gRPC API), serves until SIGTERM/SIGINT, then stops the gRPC API first (Watch streams end
with UNAVAILABLE, unary calls drain: :func:`cti.lifecycle.serving`) and the node workers
after it, releasing their leases.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Mapping, Sequence
from types import FrameType

import grpc
import redis

from cti import redis_client
from cti.config import Settings
from cti.grpc_server import TokenTable, build_server
from cti.lifecycle import serving
from cti.startup import report_redis
from cti.v1 import call_control_pb2_grpc, events_pb2_grpc
from event_service import metrics, status_http
from event_service.api import control
from event_service.api.servicer import (
    ERROR_DOMAIN,
    KEEPALIVE_OPTIONS,
    MAX_WORKERS,
    SERVICE_NAME,
    EventServicer,
)
from event_service.ingest import keyspace
from event_service.ingest.directory_watch import DirectoryWatch
from event_service.ingest.flush import ChangeFlusher
from event_service.ingest.lease import replica_id
from event_service.ingest.placement import Membership
from event_service.ingest.worker import NodeWorker

log = logging.getLogger(__name__)

GRACE_SECONDS = 5.0


# ---------------------------------------------------------------------------------------
# The gRPC API


def create_grpc_server(
    settings: Settings,
    client: redis.Redis | None = None,
    links: Mapping[str, control.NodeLink] | None = None,
    replica: str = "",
) -> grpc.Server:
    """The event service's gRPC server, bound to ``settings.events.grpc.listen``, not started.

    It serves ``cti.v1.EventService`` (:mod:`event_service.api.servicer`) and
    ``cti.v1.CallControlService`` (:mod:`event_service.api.control`) over the node workers
    in ``links`` (node address -> worker; none = every node UNAVAILABLE), forwarding calls
    for other nodes to the replica that holds them (this one is ``replica``, the id its
    node leases carry).

    ``server.stop(grace)`` (or :func:`cti.lifecycle.serving`) first ends the Watch streams
    with UNAVAILABLE, so clients resume elsewhere, then drains unary calls.
    """
    redis_conn = client if client is not None else redis_client.connect(settings.redis_url)
    events = settings.events
    tokens = TokenTable(events.grpc.tokens, events.grpc.scopes)
    servicer = EventServicer(
        redis_conn, {"registration": events.registration.hash, "call": events.call.hash}, tokens
    )
    call_control = control.CallControlServicer(redis_conn, events, links or {}, tokens, replica)

    def register(server: grpc.Server) -> None:
        events_pb2_grpc.add_EventServiceServicer_to_server(servicer, server)
        call_control_pb2_grpc.add_CallControlServiceServicer_to_server(call_control, server)

    return build_server(
        events.grpc,
        [SERVICE_NAME, control.SERVICE_NAME],
        register,
        error_domain=ERROR_DOMAIN,
        max_workers=MAX_WORKERS,
        options=KEEPALIVE_OPTIONS,
        # Endless Watch streams would otherwise hold the whole grace period and then end
        # CANCELLED instead of UNAVAILABLE.
        before_stop=servicer.stop_watches,
    )


# ---------------------------------------------------------------------------------------
# The service


class EventService:
    """Every part of one replica, built from the settings; :meth:`start` runs them,
    :meth:`stop` stops the gRPC API (through :func:`cti.lifecycle.serving`), then the rest."""

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
        self.grpc_server: grpc.Server | None = None
        self._serving = contextlib.ExitStack()

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
        self.grpc_server = create_grpc_server(
            self.settings, links={w.address: w for w in self.workers}, replica=self.owner
        )
        self.membership.start()
        for worker in self.workers:
            worker.start()
        self.flusher.start()
        if self.directory_watch is not None:
            self.directory_watch.start()
        self._serving.enter_context(serving([self.grpc_server], GRACE_SECONDS, "gRPC API"))

    def stop(self) -> None:
        self.stop_event.set()
        self._serving.close()  # the gRPC API first: Watch streams end, unary calls drain
        for worker in self.workers:
            worker.join(timeout=GRACE_SECONDS)
        self.membership.join(timeout=GRACE_SECONDS)
        self.membership.leave()  # after the workers released their leases
        self.flusher.join(timeout=GRACE_SECONDS)
        if self.directory_watch is not None:
            self.directory_watch.join(timeout=GRACE_SECONDS)
        self.client.close()


def run(settings: Settings) -> int:
    """Serve until SIGTERM / SIGINT; the gRPC API stops first, then the node workers."""
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
    try:
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
    finally:
        service.stop()
        status.shutdown()
    log.info("event service stopped")
    return 0
