"""Watch over a real gRPC server and a real Redis: snapshot, then every change in order
with no gap and no duplicate; filters, resume, and how streams end."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import redis

from cti import redis_keys
from cti.api_errors import error_info
from cti.v1 import events_pb2
from event_service.api import servicer
from event_service.api.change_log import ChangeLog, parse_revision
from event_service.app import create_grpc_server
from tests.events.grpc_support import (
    AUTH,
    NODE,
    EventsApi,
    Watching,
    call_record,
    registration,
    running_api,
)
from tests.support import RedisServer

Event = events_pb2.WatchEvent
SAFETY_TIMEOUT = 30.0
"""A deadline on every Watch so a broken stream fails the test instead of hanging it."""


@pytest.fixture
def api(redis_url: str) -> Iterator[EventsApi]:
    with running_api(redis_url) as running:
        yield running


def watch(api: EventsApi, timeout: float = SAFETY_TIMEOUT, **request: Any) -> Watching:
    return Watching(
        api.stub.Watch(events_pb2.WatchRequest(**request), metadata=AUTH, timeout=timeout)
    )


def until_snapshot_complete(stream: Any) -> list[Any]:
    entries = []
    for response in stream:
        if response.type == Event.TYPE_SNAPSHOT_COMPLETE:
            entries.append(response)
            return entries
        entries.append(response)
    raise AssertionError("stream ended before the snapshot was complete")


def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def summary(response: Any) -> tuple[str, str, str]:
    return Event.Type.Name(response.type), events_pb2.WatchKind.Name(response.kind), response.key


def test_snapshot_then_every_change_in_order(api: EventsApi) -> None:
    api.write("registration", "1001", registration("1001"))
    api.write("registration", "1000", registration("1000"))
    last = api.write("call", "1000", call_record("1000", ["u1"], "callout"))
    stream = watch(api)
    snapshot = until_snapshot_complete(stream)
    assert [summary(r) for r in snapshot] == [
        ("TYPE_SNAPSHOT", "WATCH_KIND_REGISTRATIONS", "1000"),
        ("TYPE_SNAPSHOT", "WATCH_KIND_REGISTRATIONS", "1001"),
        ("TYPE_SNAPSHOT", "WATCH_KIND_EXTENSION_CALLS", "1000"),
        ("TYPE_SNAPSHOT_COMPLETE", "WATCH_KIND_UNSPECIFIED", ""),
    ]
    assert {r.revision for r in snapshot} == {last}
    assert snapshot[2].extension_calls.notify == "callout"

    revisions = [
        api.write("call", "1000", call_record("1000", ["u1"], "answer")),
        api.write("registration", "1001", None),
        api.write("registration", "1002", registration("1002"), node="127.0.0.2:8021"),
    ]
    changes = [next(stream) for _ in revisions]
    stream.cancel()
    assert [summary(r) for r in changes] == [
        ("TYPE_UPSERT", "WATCH_KIND_EXTENSION_CALLS", "1000"),
        ("TYPE_DELETE", "WATCH_KIND_REGISTRATIONS", "1001"),
        ("TYPE_UPSERT", "WATCH_KIND_REGISTRATIONS", "1002"),
    ]
    assert [r.revision for r in changes] == revisions
    assert [r.node for r in changes] == [NODE, NODE, "127.0.0.2:8021"]
    assert changes[0].extension_calls.notify == "answer"
    assert changes[1].name == "registrations/1001" and not changes[1].HasField("registration")
    assert json.loads(changes[2].registration.json) == registration("1002")


def test_a_change_landing_between_snapshot_and_first_read_is_seen_once(api: EventsApi) -> None:
    log = ChangeLog(api.redis, {"registration": "registrations", "call": "calls"})
    api.write("registration", "1000", registration("1000"))
    snapshot = log.snapshot(["registration", "call"])
    assert set(snapshot.entries["registration"]) == {"1000"}
    between = api.write("registration", "1001", registration("1001"))
    changes, position = log.read(snapshot.revision, block_ms=10, count=100)
    assert [(c.revision, c.key, c.op) for c in changes] == [(between, "1001", "set")]
    assert position == between
    assert log.read(position, block_ms=10, count=100) == ([], position)


def test_empty_state_snapshot_then_first_changes(api: EventsApi) -> None:
    stream = watch(api)
    snapshot = until_snapshot_complete(stream)
    assert [summary(r) for r in snapshot] == [
        ("TYPE_SNAPSHOT_COMPLETE", "WATCH_KIND_UNSPECIFIED", "")
    ]
    assert snapshot[0].revision == "0-0"
    first = api.write("registration", "1000", registration("1000"))
    response = next(stream)
    stream.cancel()
    assert (response.type, response.key, response.revision) == (Event.TYPE_UPSERT, "1000", first)


def _consume(stream: Any, sink: list[Any], done_key: str) -> None:
    for response in stream:
        sink.append(response)
        if response.key == done_key and response.type == Event.TYPE_UPSERT:
            return


def _picture(responses: list[Any]) -> dict[tuple[int, str], str]:
    """What a client that applies the responses holds, checking order on the way."""
    state: dict[tuple[int, str], str] = {}
    complete = False
    last_revision = (0, 0)
    for response in responses:
        revision = parse_revision(response.revision)
        ident = (response.kind, response.key)
        if response.type == Event.TYPE_SNAPSHOT:
            assert not complete
            state[ident] = getattr(response, response.WhichOneof("resource")).json
        elif response.type == Event.TYPE_SNAPSHOT_COMPLETE:
            complete, last_revision = True, revision
        else:
            assert complete, "a change before the snapshot was complete"
            assert revision > last_revision, "a change out of order or twice"
            last_revision = revision
            if response.type == Event.TYPE_UPSERT:
                state[ident] = getattr(response, response.WhichOneof("resource")).json
            else:
                state.pop(ident)
    return state


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def test_watchers_started_during_heavy_writes_converge_on_the_stored_state(
    api: EventsApi,
) -> None:
    rng = random.Random(4)
    keys = [str(1000 + n) for n in range(12)]
    sinks: list[list[Any]] = []
    threads = []
    for step in range(400):
        if step in (0, 37, 150, 151, 333):  # watchers join while the writes go on
            sink: list[Any] = []
            thread = threading.Thread(target=_consume, args=(watch(api), sink, "done"))
            thread.start()
            sinks.append(sink)
            threads.append(thread)
        key = rng.choice(keys)
        if rng.random() < 0.3:
            api.write(rng.choice(["registration", "call"]), key, None)
        elif rng.random() < 0.5:
            api.write("registration", key, registration(key, expires=str(step)))
        else:
            api.write("call", key, call_record(key, [f"u{step}"], "callin"))
    api.write("registration", "done", registration("done"))
    for thread in threads:
        thread.join(SAFETY_TIMEOUT)
        assert not thread.is_alive()
    stored: dict[tuple[int, str], str] = {}
    for kind, hash_name in [
        (events_pb2.WATCH_KIND_REGISTRATIONS, "registrations"),
        (events_pb2.WATCH_KIND_EXTENSION_CALLS, "calls"),
    ]:
        for field, value in api.redis.hgetall(hash_name).items():
            stored[(kind, _text(field))] = _text(value)
    for sink in sinks:
        assert _picture(sink) == stored


def test_filters_and_kinds_shape_the_stream(api: EventsApi) -> None:
    api.write("registration", "1000", registration("1000", "a.example"))
    api.write("registration", "1001", registration("1001", "b.example"))
    api.write("call", "1000", call_record("1000", ["u1"]))
    stream = watch(api, kinds=[events_pb2.WATCH_KIND_REGISTRATIONS], domain="a.example")
    assert [summary(r) for r in until_snapshot_complete(stream)] == [
        ("TYPE_SNAPSHOT", "WATCH_KIND_REGISTRATIONS", "1000"),
        ("TYPE_SNAPSHOT_COMPLETE", "WATCH_KIND_UNSPECIFIED", ""),
    ]
    api.write("call", "1000", call_record("1000", ["u1", "u2"]))  # other kind
    api.write("registration", "1001", None)  # never shown to this client
    api.write("registration", "1002", registration("1002", "b.example"))  # other domain
    api.write("registration", "1000", registration("1000", "b.example"))  # leaves the view
    api.write("registration", "1003", registration("1003", "a.example"))
    assert [summary(next(stream)) for _ in range(2)] == [
        ("TYPE_DELETE", "WATCH_KIND_REGISTRATIONS", "1000"),
        ("TYPE_UPSERT", "WATCH_KIND_REGISTRATIONS", "1003"),
    ]
    stream.cancel()


def test_resume_continues_right_after_the_revision(api: EventsApi) -> None:
    stream = watch(api)
    until_snapshot_complete(stream)
    api.write("registration", "1000", registration("1000"))
    seen = next(stream)
    stream.cancel()
    missed = [
        api.write("registration", "1000", None),
        api.write("call", "1000", call_record("1000", ["u9"])),
    ]
    resumed = watch(api, resume_token=seen.revision)
    responses = [next(resumed) for _ in missed]
    resumed.cancel()
    assert [summary(r) for r in responses] == [
        ("TYPE_DELETE", "WATCH_KIND_REGISTRATIONS", "1000"),
        ("TYPE_UPSERT", "WATCH_KIND_EXTENSION_CALLS", "1000"),
    ]
    assert [r.revision for r in responses] == missed


def _watch_error(stream: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        for _ in stream:
            pass
    return error.value.code(), error_info(error.value)[0]


def test_resume_from_a_trimmed_or_unknown_revision_is_out_of_range(api: EventsApi) -> None:
    early = api.write("registration", "1000", registration("1000"))
    for n in range(5):
        api.write("registration", "1000", registration("1000", expires=str(n)))
    api.redis.xtrim(redis_keys.EVENTS_LOG_STREAM, maxlen=2, approximate=False)
    out_of_range = (grpc.StatusCode.OUT_OF_RANGE, "CHANGES_UNAVAILABLE")
    assert _watch_error(watch(api, resume_token=early)) == out_of_range
    assert _watch_error(watch(api, resume_token="0-0")) == out_of_range  # start was trimmed
    assert _watch_error(watch(api, resume_token="99999999999999-0")) == out_of_range
    code, _ = _watch_error(watch(api, resume_token="latest"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = _watch_error(watch(api, kinds=[7]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_resume_token_beyond_a_stream_id_is_an_invalid_argument(api: EventsApi) -> None:
    """Redis refuses an id past 2^64-1: that is the client's error, not an outage (a
    client told UNAVAILABLE would retry the same token forever)."""
    api.write("registration", "1000", registration("1000"))
    for token in ("18446744073709551616-0", "1-18446744073709551616"):
        code, _ = _watch_error(watch(api, resume_token=token))
        assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_reset_change_log_ends_the_stream_out_of_range(api: EventsApi) -> None:
    api.write("registration", "1000", registration("1000"))
    stream = watch(api)
    until_snapshot_complete(stream)
    api.redis.flushall()
    assert _watch_error(stream) == (grpc.StatusCode.OUT_OF_RANGE, "CHANGES_UNAVAILABLE")


def test_redis_outage_ends_the_stream_unavailable(
    api: EventsApi, redis_server: RedisServer
) -> None:
    stream = watch(api)
    until_snapshot_complete(stream)
    redis_server.stop()
    try:
        assert _watch_error(stream) == (grpc.StatusCode.UNAVAILABLE, "REDIS_UNAVAILABLE")
    finally:
        redis_server.start()


def test_server_stop_ends_streams_unavailable_so_clients_resume(api: EventsApi) -> None:
    stream = watch(api)
    until_snapshot_complete(stream)
    stopped = api.server.stop(SAFETY_TIMEOUT)
    assert _watch_error(stream) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")
    stopped.wait(SAFETY_TIMEOUT)


def _blocked_readers(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if "b" in c["flags"] and c["cmd"] == "xread")


def _watch_reads_stopped(client: redis.Redis) -> bool:
    """No connection has read the change log for 2 s (a live watch reads every second)."""
    return all(
        int(c["idle"]) >= 2
        for c in client.client_list()
        if c["cmd"] in ("xread", "xinfo|stream", "xinfo")
    )


def test_cancelled_and_expired_streams_stop_reading_redis(api: EventsApi) -> None:
    stream = watch(api)
    until_snapshot_complete(stream)
    until(lambda: _blocked_readers(api.redis) == 1, "the watch blocks on XREAD")
    stream.cancel()
    expiring = watch(api, timeout=0.5)
    assert _watch_error(expiring)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    until(lambda: _watch_reads_stopped(api.redis), "the watches stop reading", timeout=15)


def _try_watch(api: EventsApi) -> bool:
    stream = watch(api)
    try:
        until_snapshot_complete(stream)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return False
    stream.cancel()
    return True


def test_watches_beyond_the_limit_are_refused(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicer, "MAX_WATCHES", 1)
    with running_api(redis_url) as api:
        first = watch(api)
        until_snapshot_complete(first)
        assert _watch_error(watch(api)) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_MANY_WATCHES",
        )
        first.cancel()
        until(lambda: _try_watch(api), "a slot is free again once the first watch ends")


def test_a_client_resumes_across_a_server_restart_without_loss(api: EventsApi) -> None:
    """The README's client loop: apply events, remember the last revision (never a
    snapshot entry's), resume with it after UNAVAILABLE."""
    picture: dict[str, str] = {}
    revision = ""

    def apply(stream: Watching, until_key: str) -> None:
        nonlocal revision
        for event in stream:
            if event.type == Event.TYPE_DELETE:
                picture.pop(event.name, None)
            elif event.type != Event.TYPE_SNAPSHOT_COMPLETE:
                picture[event.name] = getattr(event, event.WhichOneof("resource")).json
            if event.type != Event.TYPE_SNAPSHOT:
                revision = event.revision
            if event.key == until_key:
                return

    api.write("registration", "1000", registration("1000"))
    api.write("call", "1000", call_record("1000", ["u1"]))
    first = watch(api)
    api.write("registration", "1001", registration("1001"))
    apply(first, until_key="1001")
    api.server.stop(SAFETY_TIMEOUT)
    with pytest.raises(grpc.RpcError) as error:
        apply(first, until_key="never")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    # while no server runs, the core goes on writing
    api.write("registration", "1000", None)
    api.write("call", "1000", call_record("1000", ["u1"], "hangup"))
    api.write("registration", "1002", registration("1002"))
    restarted = create_grpc_server(api.settings)
    restarted.start()
    try:
        apply(watch(api, resume_token=revision), until_key="1002")
    finally:
        restarted.stop(0).wait()
    stored = {
        f"registrations/{_text(k)}": _text(v) for k, v in api.redis.hgetall("registrations").items()
    }
    stored.update({f"calls/{_text(k)}": _text(v) for k, v in api.redis.hgetall("calls").items()})
    assert picture == stored
