"""The event API's client-facing errors, one constructor per case, each with a stable
UPPER_SNAKE reason (sent as ``google.rpc.ErrorInfo.reason``). Mapped to gRPC status codes by
:class:`cti.grpc_server.ErrorMappingInterceptor`."""

from __future__ import annotations

import grpc
import redis

from cti.api_errors import ApiError
from cti.grpc_server import redis_unavailable
from event_service import metrics
from event_service.api.messages import Kind
from event_service.ingest.control_jobs import ABANDONED, LOST, NOT_SENT, Job

_NO_CHANNEL = ("No such channel", "Cannot locate session")


def unavailable(exc: redis.RedisError) -> ApiError:
    """Any Redis error of a read (cluster errors included) is counted and answered as
    Redis being unavailable."""
    metrics.REDIS_ERRORS.labels("api").inc()
    return redis_unavailable(exc, "EventService")


def not_found(kind: Kind, key: str) -> ApiError:
    what = "REGISTRATION" if kind == "registration" else "EXTENSION_CALLS"
    return ApiError(
        grpc.StatusCode.NOT_FOUND,
        f"{what}_NOT_FOUND",
        f"no {'registration' if kind == 'registration' else 'call record'} for {key!r}",
        metadata={"key": key},
    )


def channel_not_found(uuid: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.NOT_FOUND,
        "CHANNEL_NOT_FOUND",
        f"no FreeSWITCH node holds channel {uuid}",
        metadata={"uuid": uuid},
    )


def extension_not_registered(extension: str, field: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.NOT_FOUND,
        "EXTENSION_NOT_REGISTERED",
        f"{extension} is not registered on any FreeSWITCH node",
        metadata={"extension": extension, "field": field},
    )


def job_failure(job: Job, node: str) -> ApiError:
    """The node's connection was lost: before the command was sent, or after (the
    outcome is then unknown)."""
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


def no_job_result(job: Job, node: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "NO_JOB_RESULT",
        f"FreeSWITCH {node} did not answer {job.command.name} in time (it may still happen)",
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
