"""Reads the rich error details the services attach to a failed call: the
``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer, with a
``google.rpc.ErrorInfo`` (stable UPPER_SNAKE ``reason``, ``domain``, ``metadata``) and, for
INVALID_ARGUMENT, a ``google.rpc.BadRequest`` naming the fields. Needs no grpcio-status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: ``field`` is a dotted path such as ``extension.params``."""

    field: str
    description: str


@dataclass(frozen=True)
class ErrorDetails:
    """What a failed call said. ``reason`` (e.g. ``EXTENSION_NOT_FOUND``) is the stable
    thing to branch on; ``message`` is for humans and may change."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()


def read_error(error: grpc.RpcError) -> ErrorDetails:
    """The details of ``error`` (an exception raised by a stub call, or a failed stream).
    ``reason``/``field_violations`` stay empty when the server sent no rich details, e.g.
    for UNAVAILABLE raised by the client library itself."""
    if not isinstance(error, grpc.Call):
        return ErrorDetails(grpc.StatusCode.UNKNOWN, str(error))
    code, message = error.code(), error.details() or ""
    status = _status_of(error.trailing_metadata() or ())
    if status is None:
        return ErrorDetails(code, message)
    reason, domain, metadata = "", "", {}
    violations: tuple[FieldViolation, ...] = ()
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
            violations = tuple(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return ErrorDetails(code, message, reason, domain, metadata, violations)


def _status_of(trailers: Iterable[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None
