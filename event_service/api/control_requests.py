"""Call-control requests: resource names and fields checked into what a FreeSWITCH command
may carry (:mod:`event_service.api.control_commands`), and the ``request_id`` that makes an
Originate idempotent (a reservation in Redis)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import redis

from cti.api_errors import ApiError, invalid_argument
from event_service.api import control_commands as cc
from event_service.ingest.control_jobs import Job

CHANNEL_PREFIX = "channels/"
REQUEST_ID_TTL = 600

_Value = TypeVar("_Value", str, int)


def checked(field: str, check: Callable[[_Value, str], _Value], value: _Value) -> _Value:
    """``check(value, field)``, its :class:`~cc.ArgumentError` as INVALID_ARGUMENT."""
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
        checked(field, cc.domain, parts[1]).lower(),
        checked(field, cc.extension, parts[3]),
    )


def parse_channel_name(name: str, field: str) -> str:
    if not name.startswith(CHANNEL_PREFIX):
        raise invalid_argument(field, f"must look like channels/{{uuid}}, got {name!r}")
    return checked(field, cc.uuid, name[len(CHANNEL_PREFIX) :])


def fingerprint(method: str, request: Any) -> str:
    """The request without its request_id: a reused id with another request is refused."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.request_id = ""
    return hashlib.sha256(method.encode() + copy.SerializeToString(deterministic=True)).hexdigest()


class Reservation:
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

    def settle_failed(self, job: Job) -> None:
        """Never sent, or refused by FreeSWITCH: nothing was dialled, a retry may dial.
        Sent with no answer (connection lost, deadline): it may ring, so the reservation
        stays with its job and a retry gets this uuid instead of dialling."""
        if _may_have_dialled(job):
            self.complete(job.job_uuid)
        else:
            self.release()

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


def _may_have_dialled(job: Job) -> bool:
    """The job went out on the socket and FreeSWITCH did not refuse it (a ``-ERR`` reply
    to ``bgapi`` means no job was started)."""
    refused = bool(job.reply) and not job.reply.startswith("+OK")
    return job.sent and not refused
