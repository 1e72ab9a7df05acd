"""The directory API's client-facing errors, one constructor per case, each with a stable
UPPER_SNAKE reason (sent as ``google.rpc.ErrorInfo.reason``). Mapped to gRPC status codes by
:class:`cti.grpc_server.ErrorMappingInterceptor`."""

from __future__ import annotations

import grpc

from cti.api_errors import ApiError, deadline_exceeded, invalid_argument, too_much_contention

__all__ = [
    "ApiError",
    "already_exists",
    "deadline_exceeded",
    "etag_mismatch",
    "failed_precondition",
    "invalid_argument",
    "not_found",
    "stored_value_invalid",
    "too_much_contention",
]


def not_found(kind: str, name: str) -> ApiError:
    """``kind`` is ``extension``, ``template`` or ``domain``."""
    return ApiError(
        grpc.StatusCode.NOT_FOUND,
        f"{kind.upper()}_NOT_FOUND",
        f"{name} not found",
        metadata={"name": name},
    )


def already_exists(reason: str, message: str, **metadata: str) -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, reason, message, metadata=metadata)


def failed_precondition(reason: str, message: str, **metadata: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, reason, message, metadata=metadata)


def etag_mismatch(name: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
        f"{name} was changed since it was read (stale etag); read it again and retry",
        metadata={"name": name},
    )


def stored_value_invalid(name: str, problem: str) -> ApiError:
    """A value written by hand that cannot be parsed: readable only after it is fixed."""
    return ApiError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "STORED_VALUE_INVALID",
        f"{name}: the value stored in Redis is not valid ({problem}); fix or delete it",
        metadata={"name": name},
    )
