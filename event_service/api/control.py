"""The call-control API (``cti.v1.CallControlService``): each method validates its request,
finds the FreeSWITCH node to act on, builds the command (:mod:`event_service.api.control_commands`)
and hands it as a bgapi job to that node's worker (:mod:`event_service.ingest.control_jobs`).

Routing uses what the event service already keeps in Redis: a channel's node from the
channels index (``{calls}:channels``), an extension's from the registration devices index
(the most recently registered device). Only nodes whose event socket this replica holds can
be reached (``links``); a call for another replica's node is re-issued to that replica
(:mod:`event_service.api.control_forward`).

Every call is logged (who = the token's name, what, which channel/extension, the outcome;
never a token or a password) and counted (``cti_call_control_total``).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid as uuid_module
from collections.abc import Callable, Mapping
from typing import Protocol, TypeAlias, TypeVar

import grpc
import redis

from cti import redis_keys
from cti.api_errors import ApiError, invalid_argument
from cti.config import EventSettings, TokenScope
from cti.grpc_server import TokenTable, caller_scope, check_domain
from cti.v1 import call_control_pb2 as pb
from cti.v1 import call_control_pb2_grpc
from event_service import metrics
from event_service.api import control_commands as cc
from event_service.api.control_forward import Forwarder, forwarding
from event_service.api.control_requests import (
    CHANNEL_PREFIX,
    Reservation,
    checked,
    fingerprint,
    parse_channel_name,
    parse_extension_name,
)
from event_service.api.control_routing import DEFAULT_TIMEOUT, NodeLink, NodeRouter, Target
from event_service.api.messages import split_key
from event_service.ingest.control_jobs import ABANDONED, Job

__all__ = ["SERVICE_NAME", "CallControlServicer", "NodeLink"]

log = logging.getLogger(__name__)

SERVICE_NAME = "cti.v1.CallControlService"


Request = TypeVar("Request")
Response = TypeVar("Response")
Context: TypeAlias = grpc.ServicerContext
Audit = dict[str, str]
"""What the call's log line says about its subject (filled in by the method)."""
ScopedMethod = Callable[["CallControlServicer", Request, Context, TokenScope, Audit], Response]
RpcMethod = Callable[["CallControlServicer", Request, Context], Response]
OriginatingRequest = pb.OriginateRequest | pb.EavesdropRequest
"""The requests that start a call (and may carry a ``request_id``)."""


class ChannelRequest(Protocol):
    """A request that acts on one channel (``channels/{uuid}``)."""

    @property
    def channel(self) -> str: ...


def _audited(method: ScopedMethod[Request, Response]) -> RpcMethod[Request, Response]:
    """Log and count every call with its outcome (the method records its subject)."""
    method = forwarding(method)  # another replica's node: the call is re-issued there
    name = method.__name__

    @functools.wraps(method)
    def audited(self: CallControlServicer, request: Request, context: Context) -> Response:
        scope = caller_scope(context, self.tokens)
        started = time.monotonic()
        audit: dict[str, str] = {}
        outcome = "OK"
        try:
            return method(self, request, context, scope, audit)
        except ApiError as exc:
            outcome = exc.code.name
            audit["reason"] = exc.reason
            raise
        except Exception:
            outcome = "INTERNAL"
            raise
        finally:
            metrics.CONTROL_CALLS.labels(name, outcome).inc()
            log.info(
                "call control",
                extra={
                    "who": scope.name,
                    "method": name,
                    "outcome": outcome,
                    "ms": round((time.monotonic() - started) * 1000, 1),
                    **audit,
                },
            )

    return audited


class CallControlServicer(call_control_pb2_grpc.CallControlServiceServicer):
    def __init__(
        self,
        client: redis.Redis,
        settings: EventSettings,
        links: Mapping[str, NodeLink],
        tokens: TokenTable,
        replica: str = "",
    ) -> None:
        self.client = client
        self.settings = settings
        self.tokens = tokens
        self.forwarder = Forwarder(client, settings, replica, DEFAULT_TIMEOUT)
        self.router = NodeRouter(client, settings, links, self.forwarder)

    # -- methods --------------------------------------------------------------------------

    @_audited
    def Originate(
        self, request: pb.OriginateRequest, context: Context, scope: TokenScope, audit: Audit
    ) -> pb.OriginateResponse:
        domain, user = parse_extension_name(request.extension, "extension")
        audit["extension"] = f"{user}@{domain}"
        check_domain(scope, domain)
        to = checked("destination", cc.destination, request.destination)
        dial_context = self._context(request.context, scope)
        variables = {
            self._variable_name(f"variables[{name!r}]", name): checked(
                f"variables[{name!r}]", cc.text, value
            )
            for name, value in sorted(request.variables.items())
        }
        caller_name = checked("caller_id_name", cc.text, request.caller_id_name)
        caller_number = checked("caller_id_number", cc.text, request.caller_id_number)
        ring = checked("ring_timeout_seconds", cc.ring_seconds, request.ring_timeout_seconds)
        node = self.router.registered_node(domain, user, "extension")

        def build(new_uuid: str) -> cc.Command:
            return cc.originate(
                new_uuid,
                user,
                domain,
                to,
                dial_context,
                caller_id_name=caller_name,
                caller_id_number=caller_number,
                ring_seconds=ring,
                auto_answer=request.auto_answer,
                variables=variables,
            )

        return self._originate("Originate", request, node, build, context, audit, scope.name)

    @_audited
    def Eavesdrop(
        self, request: pb.EavesdropRequest, context: Context, scope: TokenScope, audit: Audit
    ) -> pb.OriginateResponse:
        target = parse_channel_name(request.channel, "channel")
        domain, user = parse_extension_name(request.supervisor, "supervisor")
        audit.update(channel=target, extension=f"{user}@{domain}")
        check_domain(scope, domain)
        ref = self.router.channel(target, scope)
        node = self.router.registered_node(domain, user, "supervisor")
        if node != ref.node:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "DIFFERENT_NODES",
                f"the supervisor is registered on {node} but the call is on {ref.node}; "
                "eavesdrop works within one FreeSWITCH",
                metadata={"supervisor_node": node, "channel_node": ref.node},
            )
        modes: dict[int, cc.EavesdropMode] = {
            pb.EavesdropRequest.MODE_UNSPECIFIED: "listen",
            pb.EavesdropRequest.MODE_LISTEN: "listen",
            pb.EavesdropRequest.MODE_WHISPER: "whisper",
            pb.EavesdropRequest.MODE_BARGE: "barge",
        }
        if request.mode not in modes:
            raise invalid_argument("mode", f"unknown mode {request.mode}")
        mode = modes[request.mode]
        audit["mode"] = mode

        def build(new_uuid: str) -> cc.Command:
            return cc.eavesdrop(
                new_uuid, user, domain, target, mode, auto_answer=request.auto_answer
            )

        return self._originate("Eavesdrop", request, node, build, context, audit, scope.name)

    @_audited
    def Hangup(
        self, request: pb.HangupRequest, context: Context, scope: TokenScope, audit: Audit
    ) -> pb.CallControlResponse:
        channel = self._channel_of(request, scope, audit)
        cause = checked("cause", cc.cause, request.cause) if request.cause else ""
        return self.router.command(channel, cc.hangup(channel.subject, cause), context)

    @_audited
    def Transfer(
        self, request: pb.TransferRequest, context: Context, scope: TokenScope, audit: Audit
    ) -> pb.CallControlResponse:
        channel = self._channel_of(request, scope, audit)
        to = checked("destination", cc.destination, request.destination)
        legs: dict[int, cc.TransferLeg] = {
            pb.TransferRequest.LEG_UNSPECIFIED: "",
            pb.TransferRequest.LEG_BRIDGED: "bleg",
            pb.TransferRequest.LEG_BOTH: "both",
        }
        if request.leg not in legs:
            raise invalid_argument("leg", f"unknown leg {request.leg}")
        command = cc.transfer(
            channel.subject, to, self._context(request.context, scope), legs[request.leg]
        )
        audit["destination"] = to
        return self.router.command(channel, command, context)

    @_audited
    def Hold(
        self, request: pb.HoldRequest, context: Context, scope: TokenScope, audit: Audit
    ) -> pb.CallControlResponse:
        channel = self._channel_of(request, scope, audit)
        return self.router.command(channel, cc.hold(channel.subject), context)

    @_audited
    def Unhold(
        self, request: pb.UnholdRequest, context: Context, scope: TokenScope, audit: Audit
    ) -> pb.CallControlResponse:
        channel = self._channel_of(request, scope, audit)
        return self.router.command(channel, cc.unhold(channel.subject), context)

    @_audited
    def StartRecording(
        self, request: pb.StartRecordingRequest, context: Context, scope: TokenScope, audit: Audit
    ) -> pb.CallControlResponse:
        channel = self._channel_of(request, scope, audit)
        path = self._recording_path(request.path, channel, scope)
        if not 0 <= request.max_seconds <= 86400:
            raise invalid_argument("max_seconds", "must be 0 (no limit) to 86400")
        audit["path"] = path
        command = cc.start_recording(channel.subject, path, request.max_seconds)
        return self.router.command(channel, command, context)

    @_audited
    def StopRecording(
        self, request: pb.StopRecordingRequest, context: Context, scope: TokenScope, audit: Audit
    ) -> pb.CallControlResponse:
        channel = self._channel_of(request, scope, audit)
        path = self._recording_path(request.path, channel, scope) if request.path else ""
        return self.router.command(channel, cc.stop_recording(channel.subject, path), context)

    @_audited
    def SendDtmf(
        self, request: pb.SendDtmfRequest, context: Context, scope: TokenScope, audit: Audit
    ) -> pb.CallControlResponse:
        channel = self._channel_of(request, scope, audit)
        dtmf = checked("digits", cc.digits, request.digits)
        return self.router.command(channel, cc.send_dtmf(channel.subject, dtmf), context)

    # -- routing --------------------------------------------------------------------------

    def _channel_of(
        self, request: ChannelRequest, scope: TokenScope, audit: dict[str, str]
    ) -> Target:
        uuid = parse_channel_name(request.channel, "channel")
        audit["channel"] = uuid
        ref = self.router.channel(uuid, scope)
        audit["node"] = ref.node
        return Target(ref.node, uuid, split_key(ref.key)[1])

    def _context(self, requested: str, scope: TokenScope) -> str:
        """The dialplan context to send a call to. It decides what the call can reach
        (other tenants' extensions, gateways): a domain-limited token may name only the
        default one or one named after its own domains."""
        default = self.settings.control.context
        if not requested:
            return default
        chosen = checked("context", cc.context, requested)
        if scope.domains and chosen != default and chosen not in scope.domains:
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                "CONTEXT_NOT_ALLOWED",
                f"this token ({scope.name}) may use only the dialplan context {default!r} "
                "or one named after its domains",
                metadata={"context": chosen},
            )
        return chosen

    def _variable_name(self, field: str, name: str) -> str:
        try:
            return cc.variable_name(name, field, self.settings.control.variables)
        except cc.ArgumentError as exc:
            raise invalid_argument(exc.field, exc.description) from None

    def _recording_path(self, requested: str, channel: Target, scope: TokenScope) -> str:
        """Under the recordings directory; a domain-limited token's under its channel's
        domain there (the directory is shared: no tenant overwrites another's files)."""
        directory = self.settings.control.recordings_dir
        if scope.domains:
            directory = f"{directory}/{channel.domain}"
        try:
            return cc.recording_path(requested, directory, "path", f"{channel.subject}.wav")
        except cc.ArgumentError as exc:
            raise invalid_argument(exc.field, exc.description) from None

    # -- originating ----------------------------------------------------------------------

    def _originate(
        self,
        method: str,
        request: OriginatingRequest,
        node: str,
        build: Callable[[str], cc.Command],
        context: Context,
        audit: dict[str, str],
        caller: str,
    ) -> pb.OriginateResponse:
        """Send an originate with an up-front uuid; answer once FreeSWITCH accepted the job
        (the call's outcome shows in Watch). ``request_id`` makes it idempotent."""
        new_uuid = str(uuid_module.uuid4())
        audit.update(node=node, uuid=new_uuid)
        if not self.router.holds(node):
            self.forwarder.route(node, context)  # Forward before claiming the request_id
        reservation = None
        if request.request_id:
            reservation = self._reservation(method, request, caller)
            earlier = reservation.claim(new_uuid, node)
            if earlier is not None:
                audit.update(uuid=earlier["uuid"], replayed="true")
                return _replayed(earlier)
        job = Job(build(new_uuid), on_settled=functools.partial(_log_outcome, method, node))
        answered = self.router.stop_waiting_if_client_leaves(context, node, job)
        try:
            self.router.send(node, job, context)
        except Exception:
            if reservation is not None:
                reservation.settle_failed(job)
            raise
        finally:
            answered()
        if reservation is not None:
            reservation.complete(job.job_uuid)
        metrics.CONTROL_JOBS.labels(node, "originate", "accepted").inc()
        return pb.OriginateResponse(
            channel=CHANNEL_PREFIX + new_uuid, uuid=new_uuid, node=node, job_uuid=job.job_uuid
        )

    def _reservation(self, method: str, request: OriginatingRequest, caller: str) -> Reservation:
        request_id = checked("request_id", cc.request_id, request.request_id)
        return Reservation(
            self.client,
            redis_keys.control_request(self.settings.call.hash, caller, request_id),
            fingerprint(method, request),
        )


def _replayed(earlier: dict[str, str]) -> pb.OriginateResponse:
    """The answer an earlier Originate with the same ``request_id`` got."""
    return pb.OriginateResponse(
        channel=CHANNEL_PREFIX + earlier["uuid"],
        uuid=earlier["uuid"],
        node=earlier["node"],
        job_uuid=earlier.get("job_uuid", ""),
        replayed=True,
    )


def _log_outcome(method: str, node: str, job: Job) -> None:
    """An Originate's BACKGROUND_JOB (``+OK <uuid>`` answered, ``-ERR USER_BUSY``, ...)."""
    if job.failure == ABANDONED:
        return
    reason = cc.reply_error(job.result or "") if not job.failure else job.failure
    metrics.CONTROL_JOBS.labels(node, "originate", "error" if reason else "ok").inc()
    log.info(
        "originate finished",
        extra={
            "method": method,
            "node": node,
            "job_uuid": job.job_uuid,
            "result": reason or "answered",
        },
    )
