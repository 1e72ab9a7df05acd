"""A real directory gRPC server on loopback for the gRPC API tests (import the fixtures)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from cti.config import parse_settings
from cti.v1 import directory_pb2_grpc
from directory_service.grpc_api import create_grpc_server
from tests.support import free_port

TOKEN = "test-token-1"


@dataclass
class Api:
    address: str
    channel: grpc.Channel
    stub: directory_pb2_grpc.DirectoryServiceStub
    redis_url: str

    def call(self, method: str, request: Any, token: str | None = TOKEN, **kwargs: Any) -> Any:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return getattr(self.stub, method)(request, metadata=metadata, timeout=10, **kwargs)


def start_api(redis_url: str, store_a1_hash: bool = False) -> tuple[grpc.Server, Api]:
    port = free_port()
    settings = parse_settings(
        '{"redis": {"url": "%s"}, "directory": {"store_a1_hash": %s,'
        ' "grpc": {"listen": "127.0.0.1:%d", "tokens": ["%s"]}}}'
        % (redis_url, "true" if store_a1_hash else "false", port, TOKEN)
    )
    server = create_grpc_server(settings)
    server.start()
    address = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    return server, Api(address, channel, directory_pb2_grpc.DirectoryServiceStub(channel), redis_url)


@pytest.fixture
def api(redis_url: str) -> Iterator[Api]:
    server, client = start_api(redis_url)
    try:
        yield client
    finally:
        client.channel.close()
        server.stop(None).wait()


@pytest.fixture
def api_a1(redis_url: str) -> Iterator[Api]:
    server, client = start_api(redis_url, store_a1_hash=True)
    try:
        yield client
    finally:
        client.channel.close()
        server.stop(None).wait()
