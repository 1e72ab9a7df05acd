"""Get/List over a real gRPC server on loopback and a real Redis; auth, health, reflection."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cti.api_errors import error_info
from cti.v1 import events_pb2
from tests.events.grpc_support import (
    AUTH,
    EventsApi,
    call_record,
    registration,
    running_api,
    seed_call_record,
    seed_registration,
)
from tests.support import SEED_DIR, RedisServer


@pytest.fixture
def api(redis_url: str) -> Iterator[EventsApi]:
    with running_api(redis_url) as running:
        yield running


def _error(call: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    reason, _, violations = error_info(call)
    return call.code(), reason, violations


def test_get_registration_returns_the_stored_seed_value(api: EventsApi) -> None:
    raw = (SEED_DIR / "registration-value.json").read_text()
    api.redis.hset("registrations", "121", raw)
    got = api.stub.GetRegistration(
        events_pb2.GetRegistrationRequest(name="registrations/121"), metadata=AUTH
    )
    assert got.json == raw
    assert dict(got.headers) == seed_registration()
    assert (got.key, got.extension, got.domain, got.expires) == ("121", "121", "192.168.31.57", 20)


def test_get_extension_calls_returns_the_stored_seed_value(api: EventsApi) -> None:
    raw = (SEED_DIR / "call-value.json").read_text()
    api.redis.hset("calls", "121", raw)
    got = api.stub.GetExtensionCalls(
        events_pb2.GetExtensionCallsRequest(name="calls/121"), metadata=AUTH
    )
    seed = seed_call_record()
    assert (got.username, got.current, got.notify) == ("121", seed["current"], "answer")
    assert list(got.activity) == seed["activity"]
    assert {c.uuid: dict(c.fields) for c in got.calls} == {seed["current"]: seed[seed["current"]]}
    assert got.json == raw


def test_missing_entries_are_not_found(api: EventsApi) -> None:
    with pytest.raises(grpc.RpcError) as error:
        api.stub.GetRegistration(
            events_pb2.GetRegistrationRequest(name="registrations/1000"), metadata=AUTH
        )
    assert _error(error.value)[:2] == (grpc.StatusCode.NOT_FOUND, "REGISTRATION_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as error:
        api.stub.GetExtensionCalls(
            events_pb2.GetExtensionCallsRequest(name="calls/1000"), metadata=AUTH
        )
    assert _error(error.value)[:2] == (grpc.StatusCode.NOT_FOUND, "EXTENSION_CALLS_NOT_FOUND")


def test_bad_name_is_invalid_argument_naming_the_field(api: EventsApi) -> None:
    with pytest.raises(grpc.RpcError) as error:
        api.stub.GetRegistration(events_pb2.GetRegistrationRequest(name="calls/1"), metadata=AUTH)
    code, _, violations = _error(error.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in violations] == ["name"]


def _list_all_registrations(api: EventsApi, **request: object) -> tuple[list[str], int]:
    keys: list[str] = []
    token, pages = "", 0
    while True:
        page = api.stub.ListRegistrations(
            events_pb2.ListRegistrationsRequest(page_token=token, **request),  # type: ignore[arg-type]
            metadata=AUTH,
        )
        keys += [r.key for r in page.registrations]
        pages += 1
        token = page.next_page_token
        if not token:
            return keys, pages


def test_list_registrations_pages_through_every_key_once_in_order(api: EventsApi) -> None:
    expected = sorted(str(n) for n in range(1000, 1025))
    api.redis.hset("registrations", mapping={k: json.dumps(registration(k)) for k in expected})
    keys, pages = _list_all_registrations(api, page_size=10)
    assert keys == expected
    assert pages == 3


def test_list_registrations_filters_by_prefix_and_domain(api: EventsApi) -> None:
    api.redis.hset(
        "registrations",
        mapping={
            "1000": json.dumps(registration("1000", "a.example")),
            "1001": json.dumps(registration("1001", "b.example")),
            "2000": json.dumps(registration("2000", "a.example")),
            "2001@b.example": json.dumps(registration("2001", "a.example")),
        },
    )
    assert _list_all_registrations(api, extension_prefix="10")[0] == ["1000", "1001"]
    assert _list_all_registrations(api, domain="a.example", page_size=1) == (["1000", "2000"], 2)
    assert _list_all_registrations(api, domain="B.EXAMPLE")[0] == ["1001", "2001@b.example"]


def test_page_token_for_other_filters_or_garbage_is_rejected(api: EventsApi) -> None:
    api.redis.hset("registrations", mapping={k: "{}" for k in ("1000", "1001", "1002")})
    first = api.stub.ListRegistrations(
        events_pb2.ListRegistrationsRequest(page_size=1), metadata=AUTH
    )
    assert first.next_page_token
    for request in [
        events_pb2.ListRegistrationsRequest(page_token=first.next_page_token, domain="x"),
        events_pb2.ListRegistrationsRequest(page_token="not-a-token"),
        events_pb2.ListRegistrationsRequest(page_size=-1),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            api.stub.ListRegistrations(request, metadata=AUTH)
        code, _, violations = _error(error.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert violations and violations[0][0] in ("page_token", "page_size")


def test_list_extension_calls_filters_live_records(api: EventsApi) -> None:
    api.redis.hset(
        "calls",
        mapping={
            "1000": json.dumps(call_record("1000", ["u1"], "callout")),
            "1001": json.dumps(call_record("1001", ["u2"], "hangup")),
            "1002": json.dumps(call_record("1002", ["u3", "u4"], "answer")),
        },
    )
    every = api.stub.ListExtensionCalls(events_pb2.ListExtensionCallsRequest(), metadata=AUTH)
    assert [c.key for c in every.extension_calls] == ["1000", "1001", "1002"]
    assert not every.next_page_token
    live = api.stub.ListExtensionCalls(
        events_pb2.ListExtensionCallsRequest(active_only=True, page_size=1), metadata=AUTH
    )
    assert [c.key for c in live.extension_calls] == ["1000"]
    rest = api.stub.ListExtensionCalls(
        events_pb2.ListExtensionCallsRequest(
            active_only=True, page_size=1, page_token=live.next_page_token
        ),
        metadata=AUTH,
    )
    assert [c.key for c in rest.extension_calls] == ["1002"]
    assert list(rest.extension_calls[0].activity) == ["u3", "u4"]
    assert not rest.next_page_token


def test_every_method_requires_a_token(api: EventsApi) -> None:
    api.redis.hset("registrations", "1000", json.dumps(registration("1000")))
    calls: list[Callable[[Any], Any]] = [
        lambda md: api.stub.GetRegistration(
            events_pb2.GetRegistrationRequest(name="registrations/1000"), metadata=md
        ),
        lambda md: api.stub.ListRegistrations(events_pb2.ListRegistrationsRequest(), metadata=md),
        lambda md: api.stub.ListExtensionCalls(events_pb2.ListExtensionCallsRequest(), metadata=md),
        lambda md: next(iter(api.stub.Watch(events_pb2.WatchRequest(), metadata=md))),
    ]
    for call in calls:
        for metadata in [(), (("authorization", "Bearer wrong"),)]:
            with pytest.raises(grpc.RpcError) as error:
                call(metadata)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (
        api.stub.GetRegistration(
            events_pb2.GetRegistrationRequest(name="registrations/1000"), metadata=AUTH
        ).key
        == "1000"
    )


def test_health_and_reflection_work_without_a_token(api: EventsApi) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", "cti.v1.EventService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    services = {s.name for s in next(answers).list_services_response.service}
    assert "cti.v1.EventService" in services


def test_redis_outage_is_unavailable_then_recovers(
    api: EventsApi, redis_server: RedisServer
) -> None:
    api.redis.hset("registrations", "1000", json.dumps(registration("1000")))
    request = events_pb2.GetRegistrationRequest(name="registrations/1000")
    redis_server.stop()
    try:
        with pytest.raises(grpc.RpcError) as error:
            api.stub.GetRegistration(request, metadata=AUTH)
        assert _error(error.value)[:2] == (grpc.StatusCode.UNAVAILABLE, "REDIS_UNAVAILABLE")
    finally:
        redis_server.start()
    api.redis.hset("registrations", "1000", json.dumps(registration("1000")))
    assert api.stub.GetRegistration(request, metadata=AUTH).extension == "1000"
