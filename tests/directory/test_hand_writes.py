"""Writes by hand as precise changes on the directory side (``lookup.hand_writes``):
while the event service's directory watch is alive a domain written by hand keeps its
cached view and re-reads only the extensions the watch names; without the watch, or
without its answer in time, the domain is dropped as before."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from cti import redis_keys
from directory_service.lookup.hand_writes import HandWrites
from directory_service.lookup.notifications import NotificationRouter
from event_service.ingest.directory_watch import DirectoryWatch
from tests.directory.service import Service, name_values, parse_user, running_service
from tests.events.helpers import until
from tests.support import RedisServer

KS = "__keyspace@0__:"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def invalidate_domain(self, domain: str) -> None:
        self.calls.append(("domain", domain))

    def invalidate_shared(self) -> None:
        self.calls.append(("shared",))

    def refresh_extension(self, domain: str, user_id: str) -> None:
        self.calls.append(("refresh", domain, user_id))


class Timers:
    """A clock and scheduled callbacks the test runs by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.due: list[tuple[float, Callable[[], None]]] = []

    def schedule(self, delay: float, callback: Callable[[], None]) -> object:
        self.due.append((self.now + delay, callback))
        return None

    def advance(self, seconds: float) -> None:
        self.now += seconds
        ready = [c for at, c in self.due if at <= self.now]
        self.due = [(at, c) for at, c in self.due if at > self.now]
        for callback in ready:
            callback()


def router_with_watch() -> tuple[NotificationRouter, Recorder, Timers]:
    recorder, timers = Recorder(), Timers()
    hand = HandWrites(recorder, clock=lambda: timers.now, schedule=timers.schedule)
    return NotificationRouter(recorder, hand_writes=hand), recorder, timers


def message(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_without_the_watch_a_write_by_hand_drops_the_domain_at_once() -> None:
    router, recorder, _ = router_with_watch()
    router.handle(KS + "cti_exten@d", b"hset")
    assert recorder.calls == [("domain", "d")]


def test_with_the_watch_only_the_named_extensions_are_read_again() -> None:
    router, recorder, timers = router_with_watch()
    channel = redis_keys.DIRECTORY_HAND_WRITES_CHANNEL
    router.handle(channel, message(type="alive"))
    router.handle(KS + "cti_exten@d", b"hset")
    router.handle(KS + "cti_exten@d", b"hset")
    assert recorder.calls == []  # held
    router.handle(channel, message(type="read", domain="d", id=7))
    router.handle(KS + "cti_exten@d", b"hset")  # after the read: not covered by it
    router.handle(channel, message(type="done", domain="d", id=7, extensions=["1000", "1001"]))
    assert recorder.calls == [("refresh", "d", "1000"), ("refresh", "d", "1001")]
    timers.advance(HandWrites.WAIT_SECONDS + 0.1)  # the third write's answer never came
    assert recorder.calls[-1] == ("domain", "d")
    assert len(recorder.calls) == 3


def test_a_whole_answer_or_a_silent_watch_drops_the_domain() -> None:
    router, recorder, timers = router_with_watch()
    channel = redis_keys.DIRECTORY_HAND_WRITES_CHANNEL
    router.handle(channel, message(type="alive"))
    router.handle(KS + "cti_exten@d", b"hset")
    router.handle(channel, message(type="read", domain="d", id=1))
    router.handle(channel, message(type="done", domain="d", id=1, whole=True))
    assert recorder.calls == [("domain", "d")]
    timers.advance(HandWrites.WAIT_SECONDS + 0.1)
    assert recorder.calls == [("domain", "d")]  # answered: no second drop
    router.handle(channel, b"not json")  # ignored
    timers.advance(HandWrites.ALIVE_WITHIN)  # the watch went quiet
    router.handle(KS + "cti_exten@e", b"hset")
    assert recorder.calls[-1] == ("domain", "e")


def test_a_long_read_keeps_the_domain_while_the_watch_says_it_goes_on() -> None:
    """A chunked read of a big domain may outlast WAIT_SECONDS: its ``read`` and each
    ``reading`` give it as long again; silence after them drops the domain."""
    router, recorder, timers = router_with_watch()
    channel = redis_keys.DIRECTORY_HAND_WRITES_CHANNEL
    router.handle(channel, message(type="alive"))
    router.handle(KS + "cti_exten@d", b"hset")
    timers.advance(HandWrites.WAIT_SECONDS - 0.5)
    router.handle(channel, message(type="read", domain="d", id=3))
    timers.advance(1.0)  # past the write's own deadline: the read was heard of since
    router.handle(channel, message(type="reading", domain="d", id=3))
    router.handle(channel, message(type="reading", domain="d", id=4))  # another read's
    timers.advance(HandWrites.WAIT_SECONDS - 0.5)
    assert recorder.calls == []
    router.handle(channel, message(type="done", domain="d", id=3, extensions=["1000"]))
    timers.advance(HandWrites.WAIT_SECONDS * 2)
    assert recorder.calls == [("refresh", "d", "1000")]
    # the same with the watch falling silent after its read began
    router.handle(channel, message(type="alive"))
    router.handle(KS + "cti_exten@d", b"hset")
    router.handle(channel, message(type="read", domain="d", id=5))
    timers.advance(HandWrites.WAIT_SECONDS + 0.1)
    assert recorder.calls[-1] == ("domain", "d")


@pytest.fixture
def service(redis_server: RedisServer) -> Iterator[Service]:
    with running_service(redis_server.url) as svc:
        svc.wait_until_live()
        yield svc


def password_of(document: bytes) -> str:
    return name_values(parse_user(document)[2], "params", "param").get("password", "")


def test_a_hand_write_patches_one_extension_without_reloading_the_domain(
    service: Service, redis_url: str
) -> None:
    domain = "hand.example"
    key = redis_keys.extensions(domain)
    client = redis.Redis.from_url(redis_url)
    client.hset(
        key,
        mapping={f"{1000 + n}": json.dumps({"param": {"password": f"p{n}"}}) for n in range(50)},
    )
    stop = threading.Event()
    watch = DirectoryWatch(redis_url, "r1", 2.0, registration_hash="registrations", stop=stop)
    watch.start()
    try:
        until(watch.leading.is_set, what="watch leads")
        # a first write by hand, served once the watch's answer (or the drop) is in: by
        # then the replica has heard the watch announce itself
        client.hset(key, "1003", json.dumps({"param": {"password": "warm"}}))
        until(lambda: password_of(service.lookup(domain, "1003")) == "warm", what="warm-up")
        assert password_of(service.lookup(domain, "1000")) == "p0"
        misses = service.cache_count("miss")
        client.hset(key, "1001", json.dumps({"param": {"password": "by hand"}}))
        until(
            lambda: password_of(service.lookup(domain, "1001")) == "by hand",
            what="the new password served",
        )
        assert password_of(service.lookup(domain, "1002")) == "p2"
        assert service.cache_count("miss") == misses  # patched, never reloaded
    finally:
        stop.set()
        watch.join(timeout=10)
        client.close()
