"""The connection to a cti gRPC API: address, token, TLS, and readable errors.

ctictl calls two services (:class:`Service`): the directory API (``DIRECTORY``) and the
event service's call control (``CALL_CONTROL``). Before the first call
:meth:`ApiClient.connect` makes sure the address answers and serves the wanted service,
within ``connect_timeout`` (2 s by default): a refused, unknown or silent address, a server
that does not speak gRPC, or one that serves something else (it asks the server's health
and reflection services, which need no token) each end in one :class:`ApiFailure` saying
what was reached, instead of gRPC's retry loop and raw text.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cti.addresses import split_address
from cti.client import read_error
from cti.v1 import call_control_pb2_grpc, directory_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_CONNECT_TIMEOUT = 2.0
MAX_MESSAGE_BYTES = 64 << 20  # a large batch's answer (generated passwords) is several MB
INTERNAL_SERVICES = ("grpc.health.", "grpc.reflection.")
"""Services every server of ours has; left out when saying what an address serves."""


def read_error_details(error: grpc.RpcError) -> tuple[str, dict[str, str], list[tuple[str, str]]]:
    """``(reason, metadata, [(field, description)])`` from the ErrorInfo/BadRequest details
    of a failed call: the one place ctictl reads them, through the client package's
    reader."""
    details = read_error(error)
    violations = [(v.field, v.description) for v in details.field_violations]
    return details.reason, dict(details.metadata), violations


@dataclass(frozen=True)
class Service:
    """A cti gRPC service ctictl calls, and how an operator points ctictl at it (the
    words of every "wrong address" message)."""

    name: str
    """Full gRPC name, as health and reflection know it."""
    label: str
    """What it is called in "ADDRESS is not <label>"."""
    process: str
    """The program that serves it."""
    address_flag: str
    address_env: str
    default_address: str
    stub: Callable[[grpc.Channel], Any]

    @property
    def address_hint(self) -> str:
        return f"{self.address_flag} / {self.address_env}"


DIRECTORY = Service(
    name="cti.v1.DirectoryService",
    label="a DirectoryService",
    process="directory_service",
    address_flag="--address",
    address_env="CTI_API_ADDRESS",
    default_address=DEFAULT_ADDRESS,
    stub=directory_pb2_grpc.DirectoryServiceStub,
)
CALL_CONTROL = Service(
    name="cti.v1.CallControlService",
    label="an event service with call control",
    process="event_service",
    address_flag="--events-address",
    address_env="CTI_EVENTS_ADDRESS",
    default_address="127.0.0.1:50052",
    stub=call_control_pb2_grpc.CallControlServiceStub,
)


@dataclass(frozen=True)
class Target:
    """Where and how to call: flags win over the service's address variable
    (``CTI_API_ADDRESS`` / ``CTI_EVENTS_ADDRESS``), ``CTI_API_TOKEN`` and ``CTI_API_CA``
    (a PEM file; implies TLS)."""

    address: str = DEFAULT_ADDRESS
    token: str = field(default="", repr=False)
    tls: bool = False
    ca_file: str = ""
    timeout: float = 30.0
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @classmethod
    def from_flags(
        cls,
        service: Service,
        address: str | None,
        token: str | None,
        tls: bool,
        ca_file: str | None,
        timeout: float,
        env: dict[str, str] | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> Target:
        env = dict(os.environ) if env is None else env
        ca = ca_file or env.get("CTI_API_CA", "")
        return cls(
            address=address or env.get(service.address_env, service.default_address),
            token=token if token is not None else env.get("CTI_API_TOKEN", ""),
            tls=tls or bool(ca),
            ca_file=ca,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )


class ApiFailure(Exception):
    """A failed call, or an address that is not a usable service: a gRPC status
    ``code``, a ``reason`` (the server's ErrorInfo reason, or ctictl's own for connection
    problems), a message and the field violations."""

    def __init__(
        self,
        code: str,
        message: str,
        reason: str = "",
        fields: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.fields = list(fields)
        super().__init__(self.describe())

    @classmethod
    def from_error(cls, error: grpc.RpcError) -> ApiFailure:
        code = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
        message = (error.details() or "") if isinstance(error, grpc.Call) else str(error)
        reason, _, fields = read_error_details(error)
        return cls(code, message, reason, fields)

    def describe(self) -> str:
        head = self.code + (f" {self.reason}" if self.reason not in ("", self.code) else "")
        return f"{head}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
            "fields": [{"field": f, "description": d} for f, d in self.fields],
        }


# ---------------------------------------------------------------------------------------
# What an address is (pure wording, then the probes)


def wrong_service(address: str, wanted: Service, services: Sequence[str]) -> ApiFailure:
    """The failure for a server that answers but does not offer the ``wanted`` API."""
    own = [s for s in services if not s.startswith(INTERNAL_SERVICES)]
    serves = f"it serves {', '.join(own)}" if own else "it serves no cti API"
    return ApiFailure(
        "UNIMPLEMENTED",
        f"{address} is not {wanted.label} ({serves}); is {wanted.address_hint} right?",
        "WRONG_SERVICE",
    )


def _tcp_probe(address: str, wanted: Service, timeout: float) -> ApiFailure | None:
    """Why a TCP connection to ``host:port`` fails (None when it connects, or when the
    address is not a plain host:port, e.g. ``unix:``/``dns:`` targets gRPC resolves)."""
    try:
        host, port = split_address(address)
    except ValueError:
        return None
    if "/" in host:
        return None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror as exc:
        return ApiFailure(
            "UNAVAILABLE", f"{address}: cannot resolve {host!r} ({exc.strerror})", "UNRESOLVED"
        )
    except ConnectionRefusedError:
        return ApiFailure(
            "UNAVAILABLE",
            f"{address}: connection refused (nothing listens there; is {wanted.process} "
            f"running, and is {wanted.address_hint} right?)",
            "CONNECTION_REFUSED",
        )
    except TimeoutError:
        return ApiFailure("UNAVAILABLE", f"{address}: no answer within {timeout:g} s", "NO_ANSWER")
    except OSError as exc:
        return ApiFailure("UNAVAILABLE", f"{address}: {exc.strerror or exc}", "UNREACHABLE")
    return None


class ApiClient:
    """Calls one :class:`Service` (the directory API unless told otherwise); every failure
    is an :class:`ApiFailure`."""

    def __init__(self, target: Target, service: Service = DIRECTORY) -> None:
        self.target = target
        self.service = service
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if target.tls:
            root = Path(target.ca_file).read_bytes() if target.ca_file else None
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self.channel = grpc.secure_channel(target.address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target.address, options=options)
        self.stub = service.stub(self.channel)
        self.metadata = (("authorization", f"Bearer {target.token}"),) if target.token else ()

    def connect(self) -> None:
        """Fail fast, with what the address turned out to be, unless it serves this
        client's service (see the module docstring)."""
        deadline = time.monotonic() + self.target.connect_timeout
        address = self.target.address
        refused = _tcp_probe(address, self.service, self.target.connect_timeout)
        if refused is not None:
            raise refused
        try:
            grpc.channel_ready_future(self.channel).result(
                timeout=max(0.1, deadline - time.monotonic())
            )
        except grpc.FutureTimeoutError:
            tls = "TLS" if self.target.tls else "plaintext"
            hint = "drop --tls/--ca-file?" if self.target.tls else "does it need --tls?"
            raise ApiFailure(
                "UNAVAILABLE",
                f"{address} accepts connections but gave no {tls} gRPC answer within "
                f"{self.target.connect_timeout:g} s (not a gRPC server, or {hint})",
                "NOT_GRPC",
            ) from None
        health = health_pb2_grpc.HealthStub(self.channel)
        try:
            answer = health.Check(
                health_pb2.HealthCheckRequest(service=self.service.name),
                timeout=self.target.connect_timeout,
            )
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.NOT_FOUND:
                raise wrong_service(address, self.service, self.services()) from None
            return  # no health service (e.g. behind a proxy): the calls will tell
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            raise ApiFailure(
                "UNAVAILABLE",
                f"{address}: {self.service.name} is {status} (shutting down or not ready yet)",
                "NOT_SERVING",
            )

    def services(self) -> list[str]:
        """The services the server lists through reflection ([] when it does not say)."""
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            for answer in stub.ServerReflectionInfo(
                iter([request]), timeout=self.target.connect_timeout
            ):
                return [s.name for s in answer.list_services_response.service]
        except grpc.RpcError:
            pass
        return []

    def _failure(self, method: str, error: grpc.RpcError) -> ApiFailure:
        failure = ApiFailure.from_error(error)
        if failure.code == "UNIMPLEMENTED":
            services = self.services()
            wanted = self.service
            if services and wanted.name not in services:
                return wrong_service(self.target.address, wanted, services)
            if wanted.name in services:
                failure.message = (
                    f"{self.target.address} serves {wanted.name} but not {method} "
                    f"(an older {wanted.process}?)"
                )
        return failure

    def call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(
                request, metadata=self.metadata, timeout=self.target.timeout
            )
        except grpc.RpcError as error:
            raise self._failure(method, error) from None

    def start(self, method: str, request: Any) -> Callable[[], Any]:
        """Send a call without waiting; the returned function waits for its answer (and
        raises :class:`ApiFailure`), so that several calls can be in flight."""
        future = getattr(self.stub, method).future(
            request, metadata=self.metadata, timeout=self.target.timeout
        )

        def result() -> Any:
            try:
                return future.result()
            except grpc.RpcError as error:
                raise self._failure(method, error) from None

        return result

    def close(self) -> None:
        self.channel.close()
