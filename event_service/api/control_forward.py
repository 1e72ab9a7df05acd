"""Call control for a node another event-service replica holds: forwarded to that replica.

Replicas share the FreeSWITCH nodes (:mod:`event_service.ingest.placement`) and a command can only
go over the event socket of the replica holding the node's lease. When the node is not
connected here, :meth:`Forwarder.route` reads the lease's holder and the address that
replica advertises (``events.grpc.advertise``, kept beside its membership) and raises
:class:`Forward`; :func:`forwarding` catches it and re-issues the SAME RPC there:

- with the caller's own ``authorization`` metadata only: the holder checks the token and
  its scopes again (the forwarding replica is trusted with nothing);
- marked ``x-cti-forwarded: <forwarding replica>``: a forwarded call is never forwarded
  again (no loop, even while two replicas disagree about who holds a node);
- within the caller's remaining deadline (``default_timeout`` when it set none).

The holder's answer comes back as is; its error with the same code, message, ``ErrorInfo``
and ``BadRequest``. No holder, or a holder that cannot be reached: UNAVAILABLE
``NODE_NOT_CONNECTED`` as without forwarding, the message saying why.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import grpc
import redis

from cti import redis_keys
from cti.api_errors import ApiError, FieldViolation
from cti.client import read_error
from cti.config import EventSettings, GrpcSettings
from cti.v1 import call_control_pb2_grpc

FORWARDED_HEADER = "x-cti-forwarded"
"""Metadata on a forwarded call, naming the replica that forwarded it."""
NOT_CONNECTED = "NODE_NOT_CONNECTED"


class Forward(ApiError):
    """The node is held by another replica (``metadata``: ``node``, ``holder``,
    ``holder_address``): :func:`forwarding` re-issues the call there. Should it escape,
    it is still a sound answer: UNAVAILABLE NODE_NOT_CONNECTED, and a reservation made
    for the call (``request_id``) is released as for any unsent command."""


def forwarded_by(context: grpc.ServicerContext) -> str:
    """The replica that forwarded this call here; empty for a call from a client."""
    for key, value in (context.invocation_metadata() if context is not None else None) or ():
        if key == FORWARDED_HEADER:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return ""


def _not_connected(node: str, message: str, **metadata: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.UNAVAILABLE, NOT_CONNECTED, message, metadata={"node": node, **metadata}
    )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def peer_credentials(settings: GrpcSettings) -> grpc.ChannelCredentials | None:
    """TLS to the other replicas when this one serves TLS: they share its certificate
    (one Secret), so it is the root to trust; its names must cover the advertised
    addresses. ``None``: plaintext, like the API itself."""
    if not settings.tls_cert:
        return None
    return grpc.ssl_channel_credentials(root_certificates=Path(settings.tls_cert).read_bytes())


class Forwarder:
    """Finds the replica holding a node; relays calls to it over cached channels."""

    def __init__(
        self,
        client: redis.Redis,
        settings: EventSettings,
        replica: str,
        default_timeout: float,
    ) -> None:
        self.client = client
        self.replica = replica
        self.default_timeout = default_timeout
        self.registration_hash = settings.registration.hash
        self.addresses_key = redis_keys.event_replica_addresses(settings.registration.hash)
        self._credentials = peer_credentials(settings.grpc)
        self._stubs: dict[str, call_control_pb2_grpc.CallControlServiceStub] = {}
        self._lock = threading.Lock()

    def route(self, node: str, context: grpc.ServicerContext) -> ApiError:
        """Raise :class:`Forward` when another replica holds ``node`` (and this call was not
        forwarded already); else return the error saying why the node cannot be reached."""
        by = forwarded_by(context)
        if by:
            return _not_connected(
                node,
                f"FreeSWITCH {node} is not connected to this event-service replica either "
                f"(replica {by} forwarded the call here; the node is moving): retry",
                forwarded_by=by,
            )
        holder = _text(self.client.get(redis_keys.node_lease(node, self.registration_hash)))
        if not holder:
            return _not_connected(
                node,
                f"no event-service replica holds FreeSWITCH {node} (down, or being taken "
                "over): retry later",
            )
        if holder == self.replica:
            return _not_connected(
                node, f"FreeSWITCH {node} is not connected to this event-service replica"
            )
        address = _text(self.client.hget(self.addresses_key, holder))
        if not address:
            return _not_connected(
                node,
                f"event-service replica {holder} holds FreeSWITCH {node} but advertises no "
                "address to forward to (events.grpc.advertise / CTI_EVENTS_ADVERTISE)",
                holder=holder,
            )
        raise Forward(
            grpc.StatusCode.UNAVAILABLE,
            NOT_CONNECTED,
            f"FreeSWITCH {node} is held by event-service replica {holder} ({address})",
            metadata={"node": node, "holder": holder, "holder_address": address},
        )

    def relay(
        self, method: str, request: Any, context: grpc.ServicerContext, forward: Forward
    ) -> Any:
        """``method`` with ``request`` at the holder: its response, or its error raised."""
        metadata = [
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if key == "authorization"
        ]
        metadata.append((FORWARDED_HEADER, self.replica or "-"))
        remaining = context.time_remaining()
        timeout = self.default_timeout if remaining is None else max(0.0, remaining)
        call = getattr(self._stub(forward.metadata["holder_address"]), method)
        try:
            return call(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise relayed_error(exc, forward) from None

    def _stub(self, address: str) -> call_control_pb2_grpc.CallControlServiceStub:
        with self._lock:
            stub = self._stubs.get(address)
            if stub is None:
                channel = (
                    grpc.secure_channel(address, self._credentials)
                    if self._credentials is not None
                    else grpc.insecure_channel(address)
                )
                stub = self._stubs[address] = call_control_pb2_grpc.CallControlServiceStub(channel)
            return stub


def relayed_error(error: grpc.RpcError, forward: Forward) -> ApiError:
    """The holder's error as this replica's (pure): unchanged when the holder answered
    (it always sends ErrorInfo); else why the holder could not answer."""
    details = read_error(error)
    if details.reason:
        return ApiError(
            details.code,
            details.reason,
            details.message,
            tuple(FieldViolation(v.field, v.description) for v in details.field_violations),
            dict(details.metadata),
        )
    node, holder = forward.metadata["node"], forward.metadata["holder"]
    metadata = {**forward.metadata, "forward_error": details.code.name}
    if details.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ApiError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "NO_JOB_RESULT",
            f"event-service replica {holder}, which holds FreeSWITCH {node}, did not answer "
            "in time (the command may still happen)",
            metadata=metadata,
        )
    return _not_connected(
        node,
        f"FreeSWITCH {node} is held by event-service replica {holder} at "
        f"{forward.metadata['holder_address']}, which cannot be reached "
        f"({details.code.name}): retry",
        **{k: v for k, v in metadata.items() if k != "node"},
    )


class _Forwarding(Protocol):
    forwarder: Forwarder


Method = TypeVar("Method", bound=Callable[..., Any])


def forwarding(method: Method) -> Method:
    """``method`` (a call-control servicer method taking ``scope`` and ``audit``), re-issued
    to the node's holder when it raises :class:`Forward`; the audit names both ends."""

    @functools.wraps(method)
    def forwarding_method(
        servicer: _Forwarding,
        request: Any,
        context: grpc.ServicerContext,
        scope: Any,
        audit: dict[str, str],
    ) -> Any:
        by = forwarded_by(context)
        if by:
            audit["forwarded_by"] = by
        try:
            return method(servicer, request, context, scope, audit)
        except Forward as forward:
            audit.pop("uuid", None)  # a uuid chosen here is never dialled: the holder picks
            audit["forwarded_to"] = forward.metadata["holder"]
            response = servicer.forwarder.relay(method.__name__, request, context, forward)
            if getattr(response, "uuid", ""):
                audit["uuid"] = response.uuid
            return response

    return cast(Method, forwarding_method)
