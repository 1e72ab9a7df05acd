"""The API's error model: what a servicer raises and how it travels as a ``google.rpc.Status``.

Servicers, validation and stores raise :class:`ApiError` (a canonical code, a stable
UPPER_SNAKE ``reason``, a message, field violations); :func:`to_status` builds the rich
status (``ErrorInfo`` plus ``BadRequest``) and :func:`abort` ends a call with it. Pure
except :func:`abort`: no server, no Redis, so clients and ``ctictl`` import it freely. The
server plumbing that applies it to every call is :mod:`cti.grpc_server`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from cti.client import read_error


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: ``field`` is a dotted path such as ``extension.params``."""

    field: str
    description: str


@dataclass
class ApiError(Exception):
    """An error a client can act on. ``reason`` is a stable UPPER_SNAKE identifier
    (``EXTENSION_NOT_FOUND``); ``message`` is for humans; ``violations`` name bad fields."""

    code: grpc.StatusCode
    reason: str
    message: str
    violations: tuple[FieldViolation, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def invalid_argument(
    field_path: str, description: str, reason: str = "INVALID_ARGUMENT"
) -> ApiError:
    """INVALID_ARGUMENT naming one field (message and a ``BadRequest`` violation)."""
    return ApiError(
        grpc.StatusCode.INVALID_ARGUMENT,
        reason,
        f"{field_path}: {description}",
        (FieldViolation(field_path, description),),
    )


MAX_DETAIL_CHARS = 1000
"""Any text of an error's details: a status travels in the trailers (~8 KB in all), and a
message echoing a huge input would replace the error with RESOURCE_EXHAUSTED. Servicers
quote inputs by :func:`cti.text.excerpt`; this is the backstop."""


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "..."


def to_status(error: ApiError, domain: str) -> status_pb2.Status:
    """The rich ``google.rpc.Status`` for ``error`` (pure; used by the interceptor)."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=domain,
        metadata={_bounded(k): _bounded(v) for k, v in error.metadata.items()},
    )
    details = [_packed(info)]
    if error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_bounded(v.field), description=_bounded(v.description)
                )
                for v in error.violations
            ]
        )
        details.append(_packed(bad))
    return status_pb2.Status(
        code=error.code.value[0], message=_bounded(error.message), details=details
    )


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def error_info(error: grpc.RpcError) -> tuple[str, dict[str, str], list[tuple[str, str]]]:
    """``(reason, metadata, [(field, description), ...])`` of a failed call: a tuple view
    of the client package's :func:`cti.client.read_error` (the one reader), for tests."""
    details = read_error(error)
    violations = [(v.field, v.description) for v in details.field_violations]
    return details.reason, dict(details.metadata), violations


def abort(context: grpc.ServicerContext, error: ApiError, domain: str) -> NoReturn:
    """End the call with ``error`` (raises, as ``context.abort`` does)."""
    context.abort_with_status(rpc_status.to_status(to_status(error, domain)))
    raise AssertionError("unreachable")  # abort_with_status always raises


def deadline_exceeded(name: str) -> ApiError:
    """The call's deadline passed before the write could be made."""
    return ApiError(
        grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", f"{name}: deadline exceeded"
    )


def too_much_contention(name: str) -> ApiError:
    """A write that kept losing its optimistic transaction to other writers."""
    return ApiError(
        grpc.StatusCode.ABORTED,
        "CONCURRENT_WRITES",
        f"{name}: too many concurrent writes, retry",
        metadata={"name": name},
    )
