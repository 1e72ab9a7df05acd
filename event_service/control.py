"""The call-control API (``cti.v1.CallControlService``): each method validates its request,
finds the FreeSWITCH node to act on, builds the command (:mod:`event_service.control_commands`)
and hands it as a bgapi job to that node's worker (:mod:`event_service.control_jobs`).

Routing uses what the event service already keeps in Redis: a channel's node from the
channels index (``{calls}:channels``), an extension's from the registration devices index
(the most recently registered device). Only nodes whose event socket this replica holds can
be reached (``links``); a call for another replica's node is re-issued to that replica
(:mod:`event_service.control_forward`).

Every call is logged (who = the token's name, what, which channel/extension, the outcome;
never a token or a password) and counted (``cti_call_control_total``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import redis

from cti import redis_keys
from cti.api_errors import ApiError, invalid_argument
from cti.config import EventSettings, TokenScope
from cti.grpc_server import TokenTable, caller_scope, check_domain
from cti.v1 import call_control_pb2, call_control_pb2_grpc
from event_service import control_commands as cc
from event_service import metrics, registrations
from event_service.control_forward import Forwarder, forwarding
from event_service.control_jobs import ABANDONED, LOST, NOT_SENT, Job, JobQueue
from event_service.state import ChannelRef
from event_service.state_views import split_key

log = logging.getLogger(__name__)

SERVICE_NAME = "cti.v1.CallControlService"
DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for FreeSWITCH when the client set no deadline."""
REQUEST_ID_TTL = 600
CHANNEL_PREFIX = "channels/"
_NO_CHANNEL = ("No such channel", "Cannot locate session")


class NodeLink(Protocol):
    """What the API needs of a node's worker (``event_service.worker.NodeWorker``)."""

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


def _error_from_failure(job: Job, node: str) -> ApiError:
    if job.failure == NOT_SENT or job.failure == ABANDONED:
        return ApiError(
            grpc.StatusCode.UNAVAILABLE,
            "NODE_NOT_CONNECTED",
            f"the connection to FreeSWITCH {node} was lost before the command was sent",
            metadata={"node": node},
        )
    return ApiError(
        grpc.StatusCode.UNAVAILABLE,
        LOST,
        f"the connection to FreeSWITCH {node} was lost after the command was sent: "
        "its outcome is unknown (check the call's state before retrying)",
        metadata={"node": node, "job_uuid": job.job_uuid},
    )


def freeswitch_error(reason: str, node: str, command: str) -> ApiError:
    """FreeSWITCH's ``-ERR <reason>`` as an API error (the reason in ErrorInfo)."""
    metadata = {"node": node, "command": command, "freeswitch_reply": reason}
    if any(text in reason for text in _NO_CHANNEL):
        return ApiError(
            grpc.StatusCode.NOT_FOUND,
            "CHANNEL_NOT_FOUND",
            f"FreeSWITCH {node} has no such channel",
            metadata=metadata,
        )
    return ApiError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "FREESWITCH_ERROR",
        f"FreeSWITCH refused {command}: {reason}",
        metadata=metadata,
    )


def _checked(field: str, check: Callable[[str, str], str], value: str) -> str:
    try:
        return check(value, field)
    except cc.ArgumentError as exc:
        raise invalid_argument(exc.field, exc.description) from None


def parse_extension_name(name: str, field: str) -> tuple[str, str]:
    """``domains/{domain}/extensions/{extension}`` -> (domain, extension), validated."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "domains" or parts[2] != "extensions":
        raise invalid_argument(
            field, f"must look like domains/{{domain}}/extensions/{{extension}}, got {name!r}"
        )
    return (
        _checked(field, cc.domain, parts[1]).lower(),
        _checked(field, cc.extension, parts[3]),
    )


def parse_channel_name(name: str, field: str) -> str:
    if not name.startswith(CHANNEL_PREFIX):
        raise invalid_argument(field, f"must look like channels/{{uuid}}, got {name!r}")
    return _checked(field, cc.uuid, name[len(CHANNEL_PREFIX) :])


ScopedMethod = Callable[["CallControlServicer", Any, Any, TokenScope, dict[str, str]], Any]
RpcMethod = Callable[["CallControlServicer", Any, Any], Any]


def _audited(method: ScopedMethod) -> RpcMethod:
    """Log and count every call with its outcome (the method records its subject)."""
    method = forwarding(method)  # another replica's node: the call is re-issued there
    name = method.__name__

    @functools.wraps(method)
    def audited(self: CallControlServicer, request: Any, context: Any) -> Any:
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
        self.links = links
        self.tokens = tokens
        self.forwarder = Forwarder(client, settings, replica, DEFAULT_TIMEOUT)
        self.channels_key = redis_keys.call_channels(settings.call.hash)
        self.devices_key = redis_keys.registration_devices(settings.registration.hash)

    # -- methods --------------------------------------------------------------------------

    @_audited
    def Originate(
        self, request: Any, context: Any, scope: TokenScope, audit: dict[str, str]
    ) -> Any:
        domain, user = parse_extension_name(request.extension, "extension")
        audit["extension"] = f"{user}@{domain}"
        check_domain(scope, domain)
        to = _checked("destination", cc.destination, request.destination)
        dial_context = self._context(request.context, scope)
        variables = {
            self._variable_name(f"variables[{name!r}]", name): _checked(
                f"variables[{name!r}]", cc.text, value
            )
            for name, value in sorted(request.variables.items())
        }
        caller_name = _checked("caller_id_name", cc.text, request.caller_id_name)
        caller_number = _checked("caller_id_number", cc.text, request.caller_id_number)
        ring = _checked_int("ring_timeout_seconds", cc.ring_seconds, request.ring_timeout_seconds)
        node = self._registered_node(domain, user, "extension")

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
        self, request: Any, context: Any, scope: TokenScope, audit: dict[str, str]
    ) -> Any:
        target = parse_channel_name(request.channel, "channel")
        domain, user = parse_extension_name(request.supervisor, "supervisor")
        audit.update(channel=target, extension=f"{user}@{domain}")
        check_domain(scope, domain)
        ref = self._channel(target, scope)
        node = self._registered_node(domain, user, "supervisor")
        if node != ref.node:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "DIFFERENT_NODES",
                f"the supervisor is registered on {node} but the call is on {ref.node}; "
                "eavesdrop works within one FreeSWITCH",
                metadata={"supervisor_node": node, "channel_node": ref.node},
            )
        modes: dict[int, cc.EavesdropMode] = {
            call_control_pb2.EavesdropRequest.MODE_UNSPECIFIED: "listen",
            call_control_pb2.EavesdropRequest.MODE_LISTEN: "listen",
            call_control_pb2.EavesdropRequest.MODE_WHISPER: "whisper",
            call_control_pb2.EavesdropRequest.MODE_BARGE: "barge",
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
    def Hangup(self, request: Any, context: Any, scope: TokenScope, audit: dict[str, str]) -> Any:
        channel = self._channel_of(request, scope, audit)
        cause = _checked("cause", cc.cause, request.cause) if request.cause else ""
        return self._command(channel, cc.hangup(channel.subject, cause), context)

    @_audited
    def Transfer(self, request: Any, context: Any, scope: TokenScope, audit: dict[str, str]) -> Any:
        channel = self._channel_of(request, scope, audit)
        to = _checked("destination", cc.destination, request.destination)
        legs: dict[int, cc.TransferLeg] = {
            call_control_pb2.TransferRequest.LEG_UNSPECIFIED: "",
            call_control_pb2.TransferRequest.LEG_BRIDGED: "bleg",
            call_control_pb2.TransferRequest.LEG_BOTH: "both",
        }
        if request.leg not in legs:
            raise invalid_argument("leg", f"unknown leg {request.leg}")
        command = cc.transfer(
            channel.subject, to, self._context(request.context, scope), legs[request.leg]
        )
        audit["destination"] = to
        return self._command(channel, command, context)

    @_audited
    def Hold(self, request: Any, context: Any, scope: TokenScope, audit: dict[str, str]) -> Any:
        channel = self._channel_of(request, scope, audit)
        return self._command(channel, cc.hold(channel.subject), context)

    @_audited
    def Unhold(self, request: Any, context: Any, scope: TokenScope, audit: dict[str, str]) -> Any:
        channel = self._channel_of(request, scope, audit)
        return self._command(channel, cc.unhold(channel.subject), context)

    @_audited
    def StartRecording(
        self, request: Any, context: Any, scope: TokenScope, audit: dict[str, str]
    ) -> Any:
        channel = self._channel_of(request, scope, audit)
        path = self._recording_path(request.path, channel, scope)
        if not 0 <= request.max_seconds <= 86400:
            raise invalid_argument("max_seconds", "must be 0 (no limit) to 86400")
        audit["path"] = path
        command = cc.start_recording(channel.subject, path, request.max_seconds)
        return self._command(channel, command, context)

    @_audited
    def StopRecording(
        self, request: Any, context: Any, scope: TokenScope, audit: dict[str, str]
    ) -> Any:
        channel = self._channel_of(request, scope, audit)
        path = self._recording_path(request.path, channel, scope) if request.path else ""
        return self._command(channel, cc.stop_recording(channel.subject, path), context)

    @_audited
    def SendDtmf(self, request: Any, context: Any, scope: TokenScope, audit: dict[str, str]) -> Any:
        channel = self._channel_of(request, scope, audit)
        dtmf = _checked("digits", cc.digits, request.digits)
        return self._command(channel, cc.send_dtmf(channel.subject, dtmf), context)

    # -- routing --------------------------------------------------------------------------

    def _channel_of(self, request: Any, scope: TokenScope, audit: dict[str, str]) -> Target:
        uuid = parse_channel_name(request.channel, "channel")
        audit["channel"] = uuid
        ref = self._channel(uuid, scope)
        audit["node"] = ref.node
        return Target(ref.node, uuid, split_key(ref.key)[1])

    def _channel(self, uuid: str, scope: TokenScope) -> ChannelRef:
        ref = ChannelRef.from_json(self.client.hget(self.channels_key, uuid))
        if ref is None:
            raise ApiError(
                grpc.StatusCode.NOT_FOUND,
                "CHANNEL_NOT_FOUND",
                f"no FreeSWITCH node holds channel {uuid}",
                metadata={"uuid": uuid},
            )
        _, domain = split_key(ref.key)
        check_domain(scope, domain)
        return ref

    def _registered_node(self, domain: str, user: str, field: str) -> str:
        key = f"{user}@{domain}" if self.settings.key_with_domain else user
        devices = registrations.decode(self.client.hget(self.devices_key, key))
        latest = registrations.latest(registrations.devices_of(devices, user, domain))
        if latest is None:
            raise ApiError(
                grpc.StatusCode.NOT_FOUND,
                "EXTENSION_NOT_REGISTERED",
                f"{user}@{domain} is not registered on any FreeSWITCH node",
                metadata={"extension": f"{user}@{domain}", "field": field},
            )
        return latest.node

    def _link(self, node: str, context: Any) -> NodeLink:
        link = self.links.get(node)
        if link is None or not link.connected.is_set():
            raise self.forwarder.route(node, context)  # or Forward: another replica holds it
        return link

    def _context(self, requested: str, scope: TokenScope) -> str:
        """The dialplan context to send a call to. It decides what the call can reach
        (other tenants' extensions, gateways): a domain-limited token may name only the
        default one or one named after its own domains."""
        default = self.settings.control.context
        if not requested:
            return default
        chosen = _checked("context", cc.context, requested)
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

    # -- sending --------------------------------------------------------------------------

    def _send(self, node: str, job: Job, context: Any) -> float:
        """Queue ``job`` on the node; wait for FreeSWITCH to accept it. The seconds left."""
        link = self._link(node, context)
        deadline = time.monotonic() + _timeout(context)
        link.jobs.put(job)
        if not job.wait_accepted(max(0.0, deadline - time.monotonic())):
            link.jobs.forget(job)
            raise _deadline(job, node)
        if job.failure:
            raise _error_from_failure(job, node)
        if not job.reply.startswith("+OK"):
            link.jobs.forget(job)
            metrics.CONTROL_JOBS.labels(node, job.command.name, "error").inc()
            raise freeswitch_error(job.reply.removeprefix("-ERR").strip(), node, job.command.name)
        return deadline - time.monotonic()

    def _command(self, target: Target, command: cc.Command, context: Any) -> Any:
        job = Job(command)
        answered = self._stop_waiting_if_client_leaves(context, target.node, job)
        try:
            left = self._send(target.node, job, context)
            if not job.wait_done(max(0.0, left)):
                self._link_jobs(target.node).forget(job)
                raise _deadline(job, target.node)
        finally:
            answered()
        if job.failure:
            raise _error_from_failure(job, target.node)
        body = job.result or ""
        reason = cc.reply_error(body)
        metrics.CONTROL_JOBS.labels(target.node, command.name, "error" if reason else "ok").inc()
        if reason is not None:
            raise freeswitch_error(reason, target.node, command.name)
        return call_control_pb2.CallControlResponse(
            channel=CHANNEL_PREFIX + target.subject, node=target.node, reply=body.strip()
        )

    def _stop_waiting_if_client_leaves(
        self, context: Any, node: str, job: Job
    ) -> Callable[[], None]:
        """A client that cancels or disconnects ends the wait at once (the job is
        forgotten: withdrawn if not sent yet) instead of holding a server thread until
        its deadline. Call the returned function once the wait is over."""
        answered = threading.Event()

        def on_rpc_end() -> None:
            if not answered.is_set():
                self._link_jobs(node).forget(job)

        if context is not None:
            context.add_callback(on_rpc_end)
        return answered.set

    def _link_jobs(self, node: str) -> JobQueue:
        link = self.links.get(node)
        return link.jobs if link is not None else JobQueue()

    def _originate(
        self,
        method: str,
        request: Any,
        node: str,
        build: Callable[[str], cc.Command],
        context: Any,
        audit: dict[str, str],
        caller: str,
    ) -> Any:
        """Send an originate with an up-front uuid; answer once FreeSWITCH accepted the job
        (the call's outcome shows in Watch). ``request_id`` makes it idempotent."""
        new_uuid = str(uuid_module.uuid4())
        audit.update(node=node, uuid=new_uuid)
        if node not in self.links or not self.links[node].connected.is_set():
            self.forwarder.route(node, context)  # Forward before claiming the request_id
        reservation = None
        if request.request_id:
            request_id = _checked("request_id", cc.request_id, request.request_id)
            reservation = _Reservation(
                self.client,
                redis_keys.control_request(self.settings.call.hash, caller, request_id),
                _fingerprint(method, request),
            )
            earlier = reservation.claim(new_uuid, node)
            if earlier is not None:
                audit.update(uuid=earlier["uuid"], replayed="true")
                return call_control_pb2.OriginateResponse(
                    channel=CHANNEL_PREFIX + earlier["uuid"],
                    uuid=earlier["uuid"],
                    node=earlier["node"],
                    job_uuid=earlier.get("job_uuid", ""),
                    replayed=True,
                )
        job = Job(build(new_uuid), on_settled=functools.partial(_log_outcome, method, node))
        answered = self._stop_waiting_if_client_leaves(context, node, job)
        try:
            self._send(node, job, context)
        except Exception:
            # Never sent, or refused by FreeSWITCH: nothing was dialled, a retry may dial.
            # Sent with no answer (connection lost, deadline): it may ring, so the
            # reservation stays with its job and a retry gets this uuid instead of dialling.
            if reservation is not None:
                if _may_have_dialled(job):
                    reservation.complete(job.job_uuid)
                else:
                    reservation.release()
            raise
        finally:
            answered()
        if reservation is not None:
            reservation.complete(job.job_uuid)
        metrics.CONTROL_JOBS.labels(node, "originate", "accepted").inc()
        return call_control_pb2.OriginateResponse(
            channel=CHANNEL_PREFIX + new_uuid, uuid=new_uuid, node=node, job_uuid=job.job_uuid
        )


def _may_have_dialled(job: Job) -> bool:
    """The job went out on the socket and FreeSWITCH did not refuse it (a ``-ERR`` reply
    to ``bgapi`` means no job was started)."""
    refused = bool(job.reply) and not job.reply.startswith("+OK")
    return job.sent and not refused


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


def _timeout(context: Any) -> float:
    remaining = context.time_remaining() if context is not None else None
    return DEFAULT_TIMEOUT if remaining is None else max(0.0, min(remaining, 3600.0))


def _deadline(job: Job, node: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "NO_JOB_RESULT",
        f"FreeSWITCH {node} did not answer {job.command.name} in time (it may still happen)",
        metadata={"node": node, "job_uuid": job.job_uuid},
    )


def _checked_int(field: str, check: Callable[[int, str], int], value: int) -> int:
    try:
        return check(value, field)
    except cc.ArgumentError as exc:
        raise invalid_argument(exc.field, exc.description) from None


def _fingerprint(method: str, request: Any) -> str:
    """The request without its request_id: a reused id with another request is refused."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.request_id = ""
    return hashlib.sha256(method.encode() + copy.SerializeToString(deterministic=True)).hexdigest()


class _Reservation:
    """The Redis entry of one request_id: claimed (NX) before dialling, completed with the
    job id once sent (accepted, or sent with its outcome unknown), released when nothing
    was dialled so a retry can dial. A claim not yet completed is in progress."""

    def __init__(self, client: redis.Redis, key: str, fingerprint: str) -> None:
        self.client, self.key, self.fingerprint = client, key, fingerprint
        self._value = ""

    def claim(self, new_uuid: str, node: str) -> dict[str, str] | None:
        """``None`` when claimed for this call; else the earlier call's stored result."""
        entry = {"fingerprint": self.fingerprint, "uuid": new_uuid, "node": node}
        self._value = json.dumps(entry)
        if self.client.set(self.key, self._value, nx=True, ex=REQUEST_ID_TTL):
            return None
        raw = self.client.get(self.key)
        try:
            earlier = json.loads(raw) if raw else None
        except ValueError:
            earlier = None
        if not isinstance(earlier, dict) or "uuid" not in earlier:
            raise ApiError(
                grpc.StatusCode.ABORTED,
                "REQUEST_IN_DOUBT",
                "the earlier request with this request_id left no readable result; retry",
            )
        if earlier.get("fingerprint") != self.fingerprint:
            raise invalid_argument(
                "request_id",
                "already used within 10 minutes for a different request",
                reason="REQUEST_ID_REUSED",
            )
        if "job_uuid" not in earlier:
            # The first request is still being sent and may yet fail (and release the
            # id): its uuid may never ring, so it is not an answer to give.
            raise ApiError(
                grpc.StatusCode.ABORTED,
                "REQUEST_IN_PROGRESS",
                "an earlier request with this request_id is still being sent; retry",
            )
        return {k: str(v) for k, v in earlier.items()}

    def complete(self, job_uuid: str) -> None:
        entry = json.loads(self._value)
        entry["job_uuid"] = job_uuid
        self.client.set(self.key, json.dumps(entry), xx=True, keepttl=True)

    def release(self) -> None:
        """Delete the entry if it is still ours (nothing was dialled)."""
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.key)  # type: ignore[no-untyped-call]
                if pipe.get(self.key) == self._value.encode():
                    pipe.multi()
                    pipe.delete(self.key)
                    pipe.execute()
            except redis.WatchError:
                pass


def register(
    server: grpc.Server,
    client: redis.Redis,
    settings: EventSettings,
    links: Mapping[str, NodeLink],
    replica: str = "",
) -> None:
    servicer = CallControlServicer(
        client, settings, links, TokenTable(settings.grpc.tokens, settings.grpc.scopes), replica
    )
    call_control_pb2_grpc.add_CallControlServiceServicer_to_server(servicer, server)
