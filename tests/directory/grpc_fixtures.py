"""A real directory gRPC server on loopback for the gRPC API tests (import the fixtures)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
import redis

from cti import redis_keys
from cti.config import parse_settings
from cti.v1 import directory_pb2_grpc
from directory_service.app import create_grpc_server
from directory_service.lookup.directory import DomainData, DomainView, SharedData
from directory_service.lookup.request import DirectoryRequest
from tests.support import free_port

TOKEN = "test-token-1"
TENANT_TOKEN = "tenant-b-token"
"""Limited to domain ``b.example`` (token scopes)."""
READER_TOKEN = "reader-token"
"""Read-only (Get/List only)."""


@dataclass
class Api:
    address: str
    channel: grpc.Channel
    stub: directory_pb2_grpc.DirectoryServiceStub
    redis_url: str

    def call(self, method: str, request: Any, token: str | None = TOKEN, **kwargs: Any) -> Any:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return getattr(self.stub, method)(request, metadata=metadata, timeout=10, **kwargs)


def start_api(
    redis_url: str, store_a1_hash: bool = False, tenant_writes: dict[str, Any] | None = None
) -> tuple[grpc.Server, Api]:
    port = free_port()
    document: dict[str, Any] = {
        "redis": {"url": redis_url},
        "directory": {
            "store_a1_hash": store_a1_hash,
            "grpc": {
                "listen": f"127.0.0.1:{port}",
                "tokens": [
                    TOKEN,
                    {"token": TENANT_TOKEN, "name": "tenant-b", "domains": ["b.example"]},
                    {"token": READER_TOKEN, "name": "reader", "read_only": True},
                ],
            },
        },
    }
    if tenant_writes is not None:
        document["directory"]["tenant_writes"] = tenant_writes
    settings = parse_settings(json.dumps(document))
    server = create_grpc_server(settings)
    server.start()
    address = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    return server, Api(
        address, channel, directory_pb2_grpc.DirectoryServiceStub(channel), redis_url
    )


@pytest.fixture(name="api")
def api_fixture(redis_url: str) -> Iterator[Api]:
    server, client = start_api(redis_url)
    try:
        yield client
    finally:
        client.channel.close()
        server.stop(None).wait()


@pytest.fixture(name="api_a1")
def api_a1_fixture(redis_url: str) -> Iterator[Api]:
    server, client = start_api(redis_url, store_a1_hash=True)
    try:
        yield client
    finally:
        client.channel.close()
        server.stop(None).wait()


def expect_error(
    call: Any, code: grpc.StatusCode, reason: str = "", field: str = ""
) -> grpc.RpcError:
    """Run ``call()``; it must fail with ``code`` (and ErrorInfo ``reason``, and a
    BadRequest violation naming ``field``)."""
    from cti.api_errors import error_info

    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, (error.code(), error.details())
    got_reason, _, violations = error_info(error)
    if reason:
        assert got_reason == reason, (got_reason, error.details())
    if field:
        assert field in [f for f, _ in violations], (violations, error.details())
        assert field in error.details()
    return error


def served(redis_url: str, domain: str, user: str) -> bytes:
    """What a lookup of ``user`` answers from what Redis holds now (the domain view the
    xml_curl edge answers with, built from a fresh read): "what the API accepts the
    directory serves" checks against this."""
    client = redis.Redis.from_url(redis_url)
    try:
        stored = cast(dict[bytes, bytes], client.hgetall(redis_keys.extensions(domain)))
        shared = cast(dict[bytes, bytes], client.hgetall(redis_keys.TEMPLATES))
    finally:
        client.close()
    extensions = {k.decode("utf-8", "surrogateescape"): v for k, v in stored.items()}
    templates = {k.decode(): v for k, v in shared.items()}
    view = DomainView(DomainData(domain, extensions), SharedData(templates, {}), {})
    return view.answer(DirectoryRequest(section="directory", domain=domain, user=user))
