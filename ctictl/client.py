"""The connection to the directory API: address, token, TLS, and readable errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from cti.client import read_error
from cti.v1 import directory_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 64 << 20  # a large batch's answer (generated passwords) is several MB


@dataclass(frozen=True)
class Target:
    """Where and how to call: flags win over ``CTI_API_ADDRESS`` / ``CTI_API_TOKEN`` /
    ``CTI_API_CA`` (a PEM file; implies TLS)."""

    address: str = DEFAULT_ADDRESS
    token: str = field(default="", repr=False)
    tls: bool = False
    ca_file: str = ""
    timeout: float = 30.0

    @classmethod
    def from_flags(
        cls,
        address: str | None,
        token: str | None,
        tls: bool,
        ca_file: str | None,
        timeout: float,
        env: dict[str, str] | None = None,
    ) -> Target:
        env = dict(os.environ) if env is None else env
        ca = ca_file or env.get("CTI_API_CA", "")
        return cls(
            address=address or env.get("CTI_API_ADDRESS", DEFAULT_ADDRESS),
            token=token if token is not None else env.get("CTI_API_TOKEN", ""),
            tls=tls or bool(ca),
            ca_file=ca,
            timeout=timeout,
        )


class ApiFailure(Exception):
    """A failed call, with what the server said (code, reason, field violations)."""

    def __init__(self, error: grpc.RpcError) -> None:
        self.code = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
        self.message = error.details() if isinstance(error, grpc.Call) else str(error)
        details = read_error(error)
        self.reason, self.metadata = details.reason, dict(details.metadata)
        self.fields = [(v.field, v.description) for v in details.field_violations]
        super().__init__(self.describe())

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


class DirectoryClient:
    """Calls ``cti.v1.DirectoryService``; every failure is an :class:`ApiFailure`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if target.tls:
            root = Path(target.ca_file).read_bytes() if target.ca_file else None
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self.channel = grpc.secure_channel(target.address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target.address, options=options)
        self.stub = directory_pb2_grpc.DirectoryServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {target.token}"),) if target.token else ()

    def call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(
                request, metadata=self.metadata, timeout=self.target.timeout
            )
        except grpc.RpcError as error:
            raise ApiFailure(error) from None

    def close(self) -> None:
        self.channel.close()
