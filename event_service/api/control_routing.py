"""Where a call-control command goes and how it is sent: a channel's node from the channels
index (``{calls}:channels``), an extension's from the registration devices index (the most
recently registered device); the command as a bgapi job on that node's worker
(:mod:`event_service.ingest.control_jobs`), or re-issued to the replica that holds the node
(:mod:`event_service.api.control_forward`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
import redis

from cti import redis_keys
from cti.config import EventSettings, TokenScope
from cti.grpc_server import check_domain
from cti.v1 import call_control_pb2
from event_service import metrics
from event_service.api import control_commands as cc
from event_service.api import errors
from event_service.api.control_forward import Forwarder
from event_service.api.control_requests import CHANNEL_PREFIX
from event_service.api.messages import split_key
from event_service.ingest import registrations
from event_service.ingest.control_jobs import Job, JobQueue
from event_service.ingest.state import ChannelRef

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for FreeSWITCH when the client set no deadline."""


class NodeLink(Protocol):
    """What the API needs of a node's worker (``event_service.ingest.worker.NodeWorker``)."""

    address: str
    connected: threading.Event
    jobs: JobQueue


@dataclass(frozen=True)
class Target:
    """The node to act on, what the call is about (for the log), and the domain of the
    channel's extension (empty for an extension's target)."""

    node: str
    subject: str
    domain: str = ""


class NodeRouter:
    """Finds a command's node in Redis and sends it there. Only nodes whose event socket
    this replica holds can be reached (``links``); for another replica's node,
    :meth:`link` raises the forwarder's ``Forward``."""

    def __init__(
        self,
        client: redis.Redis,
        settings: EventSettings,
        links: Mapping[str, NodeLink],
        forwarder: Forwarder,
    ) -> None:
        self.client = client
        self.settings = settings
        self.links = links
        self.forwarder = forwarder
        self.channels_key = redis_keys.call_channels(settings.call.hash)
        self.devices_key = redis_keys.registration_devices(settings.registration.hash)

    # -- where ----------------------------------------------------------------------------

    def channel(self, uuid: str, scope: TokenScope) -> ChannelRef:
        ref = ChannelRef.from_json(self.client.hget(self.channels_key, uuid))
        if ref is None:
            raise errors.channel_not_found(uuid)
        _, domain = split_key(ref.key)
        check_domain(scope, domain)
        return ref

    def registered_node(self, domain: str, user: str, field: str) -> str:
        key = f"{user}@{domain}" if self.settings.key_with_domain else user
        devices = registrations.decode(self.client.hget(self.devices_key, key))
        latest = registrations.latest(registrations.devices_of(devices, user, domain))
        if latest is None:
            raise errors.extension_not_registered(f"{user}@{domain}", field)
        return latest.node

    def holds(self, node: str) -> bool:
        """This replica holds ``node``'s event socket, connected."""
        link = self.links.get(node)
        return link is not None and link.connected.is_set()

    def link(self, node: str, context: grpc.ServicerContext) -> NodeLink:
        link = self.links.get(node)
        if link is None or not link.connected.is_set():
            raise self.forwarder.route(node, context)  # or Forward: another replica holds it
        return link

    def link_jobs(self, node: str) -> JobQueue:
        link = self.links.get(node)
        return link.jobs if link is not None else JobQueue()

    # -- sending --------------------------------------------------------------------------

    def send(self, node: str, job: Job, context: grpc.ServicerContext) -> float:
        """Queue ``job`` on the node; wait for FreeSWITCH to accept it. The seconds left."""
        link = self.link(node, context)
        deadline = time.monotonic() + _timeout(context)
        link.jobs.put(job)
        if not job.wait_accepted(max(0.0, deadline - time.monotonic())):
            link.jobs.forget(job)
            raise errors.no_job_result(job, node)
        if job.failure:
            raise errors.job_failure(job, node)
        if not job.reply.startswith("+OK"):
            link.jobs.forget(job)
            metrics.CONTROL_JOBS.labels(node, job.command.name, "error").inc()
            raise errors.freeswitch_error(
                job.reply.removeprefix("-ERR").strip(), node, job.command.name
            )
        return deadline - time.monotonic()

    def command(
        self, target: Target, command: cc.Command, context: grpc.ServicerContext
    ) -> call_control_pb2.CallControlResponse:
        """Send ``command`` and wait for its result (the BACKGROUND_JOB)."""
        job = Job(command)
        answered = self.stop_waiting_if_client_leaves(context, target.node, job)
        try:
            left = self.send(target.node, job, context)
            if not job.wait_done(max(0.0, left)):
                self.link_jobs(target.node).forget(job)
                raise errors.no_job_result(job, target.node)
        finally:
            answered()
        if job.failure:
            raise errors.job_failure(job, target.node)
        body = job.result or ""
        reason = cc.reply_error(body)
        metrics.CONTROL_JOBS.labels(target.node, command.name, "error" if reason else "ok").inc()
        if reason is not None:
            raise errors.freeswitch_error(reason, target.node, command.name)
        return call_control_pb2.CallControlResponse(
            channel=CHANNEL_PREFIX + target.subject, node=target.node, reply=body.strip()
        )

    def stop_waiting_if_client_leaves(
        self, context: grpc.ServicerContext, node: str, job: Job
    ) -> Callable[[], None]:
        """A client that cancels or disconnects ends the wait at once (the job is
        forgotten: withdrawn if not sent yet) instead of holding a server thread until
        its deadline. Call the returned function once the wait is over."""
        answered = threading.Event()

        def on_rpc_end() -> None:
            if not answered.is_set():
                self.link_jobs(node).forget(job)

        if context is not None:
            context.add_callback(on_rpc_end)
        return answered.set


def _timeout(context: grpc.ServicerContext) -> float:
    remaining = context.time_remaining() if context is not None else None
    return DEFAULT_TIMEOUT if remaining is None else max(0.0, min(remaining, 3600.0))
