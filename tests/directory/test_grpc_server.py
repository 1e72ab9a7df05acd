"""Server plumbing: auth, health, reflection, graceful stop, and the change events."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cti import redis_keys
from cti.api_errors import ApiError
from cti.config import ConfigError, parse_settings
from cti.directory_entry import DirectoryEntry
from cti.v1 import directory_pb2 as pb
from cti.v1 import directory_pb2_grpc
from directory_service.api.servicer import SERVICE_NAME
from directory_service.api.store import DirectoryStore
from directory_service.app import create_grpc_server
from tests.directory.grpc_fixtures import Api, api_fixture, expect_error

__all__ = ["api_fixture"]  # the pytest fixture "api"
from tests.support import free_port

Code = grpc.StatusCode
GET = pb.GetExtensionRequest(name="domains/a.com/extensions/1")


def test_calls_need_a_valid_bearer_token(api: Api) -> None:
    for token in (None, "wrong", ""):
        expect_error(
            lambda t=token: api.call("GetExtension", GET, token=t),
            Code.UNAUTHENTICATED,
            "INVALID_TOKEN",
        )
    expect_error(
        lambda: api.stub.GetExtension(GET, metadata=(("authorization", "Basic dGVzdA=="),)),
        Code.UNAUTHENTICATED,
    )
    expect_error(lambda: api.call("GetExtension", GET), Code.NOT_FOUND)  # authenticated


def test_health_and_reflection_need_no_token(api: Api) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", SERVICE_NAME):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    (answer,) = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    services = {s.name for s in answer.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services


def settings_for(listen: str) -> Any:
    return parse_settings(json.dumps({"directory": {"grpc": {"listen": listen}}}))


def test_open_server_only_on_loopback(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="no API tokens"):
        create_grpc_server(settings_for(f"0.0.0.0:{free_port()}"))
    server = create_grpc_server(settings_for(f"127.0.0.1:{free_port()}"))
    server.stop(None)


def test_stop_reports_not_serving_then_drains(redis_url: str) -> None:
    port = free_port()
    server = create_grpc_server(settings_for(f"127.0.0.1:{port}"))
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        stopped = server.stop(5)
        assert stopped.wait(10)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)


def test_tls(redis_url: str, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()
    document = {
        "redis": {"url": redis_url},
        "directory": {
            "grpc": {
                "listen": f"127.0.0.1:{port}",
                "tokens": ["tls-token"],
                "tls_cert": str(cert),
                "tls_key": str(key),
            }
        },
    }
    server = create_grpc_server(parse_settings(json.dumps(document)))
    server.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            stub = directory_pb2_grpc.DirectoryServiceStub(channel)
            metadata = (("authorization", "Bearer tls-token"),)
            created = stub.CreateDomain(
                pb.CreateDomainRequest(domain_id="a.com"), metadata=metadata, timeout=10
            )
            assert created.name == "domains/a.com"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=2)
    finally:
        server.stop(None)


def test_unreadable_tls_files_are_a_config_error(redis_url: str, tmp_path: Path) -> None:
    document = {
        "directory": {
            "grpc": {
                "listen": f"127.0.0.1:{free_port()}",
                "tls_cert": str(tmp_path / "missing.pem"),
                "tls_key": str(tmp_path / "missing.key"),
            }
        }
    }
    with pytest.raises(ConfigError, match="cannot read"):
        create_grpc_server(parse_settings(json.dumps(document)))


def test_write_retries_stop_at_the_deadline(redis_url: str) -> None:
    store = DirectoryStore(redis.Redis.from_url(redis_url))
    error = None
    try:
        store.create_extensions("a.com", [("1", DirectoryEntry())], deadline=time.monotonic() - 1)
    except ApiError as exc:
        error = exc
    assert error is not None and error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert redis.Redis.from_url(redis_url).exists(redis_keys.extensions("a.com")) == 0


class Subscriber:
    """Everything published on the directory channels, in order."""

    def __init__(self, url: str) -> None:
        self.pubsub = redis.Redis.from_url(url).pubsub()  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(
            redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, redis_keys.DIRECTORY_CHANGES_CHANNEL
        )
        for _ in range(2):
            self.pubsub.get_message(timeout=5)  # the subscribe confirmations

    def take(self, count: int) -> list[tuple[str, str]]:
        messages: list[tuple[str, str]] = []
        deadline = time.monotonic() + 10
        while len(messages) < count and time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                messages.append((message["channel"].decode(), message["data"].decode()))
        return messages

    def assert_quiet(self) -> None:
        assert self.pubsub.get_message(timeout=0.2) is None


def begin(domain: str) -> tuple[str, str]:
    return (redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, domain)


def change(**fields: str) -> tuple[str, dict[str, str]]:
    event = {
        "kind": "extension",
        "op": "create",
        "domain": "",
        "extension": "",
        "alias": "",
        "old_alias": "",
        "template": "",
    }
    event.update(fields)
    return (redis_keys.DIRECTORY_CHANGES_CHANNEL, event)


def decoded(messages: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    return [
        (c, json.loads(d) if c == redis_keys.DIRECTORY_CHANGES_CHANNEL else d) for c, d in messages
    ]


def test_every_write_publishes_a_bracketed_change_event(api: Api) -> None:
    events = Subscriber(api.redis_url)
    api.call(
        "CreateExtension",
        pb.CreateExtensionRequest(
            parent="domains/a.com",
            extension_id="1001",
            extension=pb.Extension(attributes={"number-alias": "al"}),
        ),
    )
    api.call(
        "UpdateExtension",
        pb.UpdateExtensionRequest(
            extension=pb.Extension(
                name="domains/a.com/extensions/1001", attributes={"number-alias": "bo"}
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["attributes.number-alias"]),
        ),
    )
    api.call("DeleteExtension", pb.DeleteExtensionRequest(name="domains/a.com/extensions/1001"))
    api.call(
        "BatchCreateExtensions",
        pb.BatchCreateExtensionsRequest(
            parent="domains/a.com", range=pb.ExtensionRange(first="7", last="8")
        ),
    )
    api.call(
        "CreateExtensionTemplate", pb.CreateExtensionTemplateRequest(extension_template_id="t")
    )
    api.call("CreateDomain", pb.CreateDomainRequest(domain_id="a.com"))
    assert decoded(events.take(14)) == [
        begin("a.com"),
        change(domain="a.com", extension="1001", alias="al"),
        begin("a.com"),
        change(op="update", domain="a.com", extension="1001", alias="bo", old_alias="al"),
        begin("a.com"),
        change(op="delete", domain="a.com", extension="1001", alias="bo"),
        begin("a.com"),
        change(domain="a.com", extension="7"),
        begin("a.com"),
        change(domain="a.com", extension="8"),
        begin(""),
        change(kind="template", template="t"),
        begin("a.com"),
        change(kind="domain", domain="a.com"),
    ]
    # A refused write publishes nothing.
    expect_error(
        lambda: api.call(
            "CreateExtension", pb.CreateExtensionRequest(parent="domains/a.com", extension_id="7")
        ),
        Code.ALREADY_EXISTS,
    )
    events.assert_quiet()


def test_bracket_encloses_the_keyspace_notification(api: Api) -> None:
    """Replicas see begin, then the hash notification, then the change event."""
    pubsub = redis.Redis.from_url(api.redis_url).pubsub()  # type: ignore[no-untyped-call]
    pubsub.psubscribe("__keyspace@0__:cti_*")
    pubsub.subscribe(redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, redis_keys.DIRECTORY_CHANGES_CHANNEL)
    for _ in range(3):
        pubsub.get_message(timeout=5)
    api.call("CreateExtension", pb.CreateExtensionRequest(parent="domains/a.com", extension_id="1"))
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] in ("message", "pmessage"):
            seen.append(message["channel"].decode())
    assert seen == [
        redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL,
        "__keyspace@0__:cti_exten@a.com",
        redis_keys.DIRECTORY_CHANGES_CHANNEL,
    ]


def test_error_mapping_of_any_service(redis_url: str) -> None:
    """The shared plumbing, as another service uses it: ApiError -> its code with
    ErrorInfo/BadRequest; anything else -> INTERNAL without the exception's text."""
    from cti.api_errors import error_info, invalid_argument
    from cti.config import GrpcSettings
    from cti.grpc_server import build_server

    def refuse(request: bytes, context: Any) -> bytes:
        raise invalid_argument("thing.size", "must be positive")

    def crash(request: bytes, context: Any) -> bytes:
        raise RuntimeError("secret internals")

    def register(server: grpc.Server) -> None:
        handlers = {
            "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
            "Crash": grpc.unary_unary_rpc_method_handler(crash),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Thing", handlers),)
        )

    port = free_port()
    stopping: list[bool] = []
    server = build_server(
        GrpcSettings(f"127.0.0.1:{port}", tokens=("t",)),
        ["test.Thing"],
        register,
        error_domain="test.cti",
        before_stop=lambda: stopping.append(True),
    )
    server.start()
    metadata = (("authorization", "Bearer t"),)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            refuse_call = channel.unary_unary("/test.Thing/Refuse")
            crash_call = channel.unary_unary("/test.Thing/Crash")
            with pytest.raises(grpc.RpcError) as refused:
                refuse_call(b"", metadata=metadata, timeout=5)
            assert refused.value.code() == Code.INVALID_ARGUMENT
            assert error_info(refused.value) == (
                "INVALID_ARGUMENT",
                {},
                [("thing.size", "must be positive")],
            )
            with pytest.raises(grpc.RpcError) as crashed:
                crash_call(b"", metadata=metadata, timeout=5)
            assert crashed.value.code() == Code.INTERNAL
            assert "secret" not in (crashed.value.details() or "")
            assert error_info(crashed.value)[0] == "INTERNAL"
            with pytest.raises(grpc.RpcError) as unauthenticated:
                crash_call(b"", timeout=5)
            assert unauthenticated.value.code() == Code.UNAUTHENTICATED
    finally:
        server.stop(None)
    assert stopping == [True]


def test_redis_down_is_unavailable_not_internal() -> None:
    """A Redis outage is transient: clients (ctictl import among them) must see UNAVAILABLE
    and retry later, not INTERNAL."""
    from tests.directory.grpc_fixtures import start_api
    from tests.support import running_redis

    with running_redis() as redis_server:
        server, api = start_api(redis_server.url)
        try:
            redis_server.stop()
            expect_error(lambda: api.call("GetExtension", GET), Code.UNAVAILABLE)
            create = pb.CreateExtensionRequest(
                parent="domains/a.com", extension_id="1001", extension=pb.Extension(password="p")
            )
            expect_error(lambda: api.call("CreateExtension", create), Code.UNAVAILABLE)
        finally:
            api.channel.close()
            server.stop(None).wait()
