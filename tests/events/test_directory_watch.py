"""Writes by hand to the directory reach FreeSWITCH's cache
(``event_service.ingest.directory_watch``): a hand ``HSET`` of a cached user's password
flushes exactly that user (and its aliases); an API write is not flushed twice; a
10,000-extension import is a bounded number of flushes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import pytest
import redis

from cti import redis_keys
from cti.changes import DirectoryChange
from cti.config import EslNode
from directory_service.lookup.hand_writes import HandWrites
from directory_service.lookup.notifications import NotificationRouter
from event_service.ingest.directory_diff import (
    MAX_WAIT_SECONDS,
    PRECISE_MAX,
    WINDOW_SECONDS,
    HashScan,
    digests,
    extension_changes,
    read_due,
)
from event_service.ingest.directory_watch import DirectoryWatch
from event_service.ingest.flush import ChangeFlusher
from event_service.ingest.worker import NodeWorker
from tests.eslserver import FakeFreeSwitch
from tests.events.helpers import settings, until

DOMAIN = "example.com"
KEY = redis_keys.extensions(DOMAIN)


def extension(password: str, alias: str = "") -> str:
    attributes = {"number-alias": alias} if alias else {}
    return json.dumps({"param": {"password": password}, "variable": {}, "attribute": attributes})


def test_extension_changes_name_old_and_new_aliases() -> None:
    old = digests({b"1001": extension("a", "alice").encode(), b"1002": b"{}"}, extension=True)
    new = digests({b"1001": extension("b", "al").encode(), b"1003": b"{}"}, extension=True)
    assert extension_changes(DOMAIN, old, new) == [
        DirectoryChange("extension", "update", DOMAIN, "1001", "al", "alice"),
        DirectoryChange("extension", "create", DOMAIN, "1003"),
        DirectoryChange("extension", "delete", DOMAIN, "1002"),
    ]
    assert extension_changes(DOMAIN, new, new) == []


def chunk(*pairs: tuple[str, str]) -> list[bytes]:
    return [part.encode() for pair in pairs for part in pair]


def test_a_read_in_chunks_names_what_changed_whichever_chunk_it_is_in() -> None:
    first = HashScan("k", None, {}, extension=True)
    first.feed(8, chunk(("1001", extension("a", "alice")), ("1002", extension("b"))))
    first.feed(0, chunk(("1003", extension("c")), ("1004", extension("d"))))
    assert first.finished and first.extension_changes(DOMAIN) is None  # nothing known before
    again = HashScan("k", first.fields, first.chunks, extension=True)
    again.feed(8, chunk(("1001", extension("a", "alice")), ("1002", extension("b"))))  # same
    again.feed(0, chunk(("1003", extension("C", "carol")), ("1005", extension("e"))))
    assert again.fields.keys() == {"1001", "1002", "1003", "1005"}
    assert again.extension_changes(DOMAIN) == [
        DirectoryChange("extension", "update", DOMAIN, "1003", "carol"),
        DirectoryChange("extension", "create", DOMAIN, "1005"),
        DirectoryChange("extension", "delete", DOMAIN, "1004"),
    ]
    # the first chunk again, its password changed: the chunk differs, the field is named
    third = HashScan("k", again.fields, again.chunks, extension=True)
    third.feed(8, chunk(("1001", extension("A", "alice")), ("1002", extension("b"))))
    third.feed(0, chunk(("1003", extension("C", "carol")), ("1005", extension("e"))))
    assert third.extension_changes(DOMAIN) == [
        DirectoryChange("extension", "update", DOMAIN, "1001", "alice")
    ]


def test_a_read_that_meets_a_field_twice_keeps_no_chunks() -> None:
    """Redis rehashing: HSCAN may return a field twice; the chunks it saw are not a map
    of the hash to rely on next time."""
    scan = HashScan("k", None, {}, extension=True)
    scan.feed(4, chunk(("1001", "{}"), ("1002", "{}")))
    scan.feed(0, chunk(("1002", "{}"), ("1003", "{}")))
    assert scan.fields.keys() == {"1001", "1002", "1003"}
    assert scan.chunks == {}


def test_reads_are_spaced_by_their_cost_and_never_later_than_the_bound() -> None:
    # a quiet key: read once the window has passed
    assert not read_due(10.1, 10.0, 0.0, 0.0)
    assert read_due(10.0 + WINDOW_SECONDS + 0.01, 10.0, 0.0, 0.0)
    # a big hash just read for 0.5 s: the next read waits as long again after it
    assert not read_due(10.3, 10.0, 10.0, 0.5)
    assert read_due(10.51, 10.0, 10.0, 0.5)
    # however costly the last read, a write waits at most MAX_WAIT_SECONDS
    assert read_due(10.0 + MAX_WAIT_SECONDS + 0.01, 10.0, 10.0, 30.0)


class Deployment:
    """One FreeSWITCH, one node worker, the change flusher and the directory watch."""

    def __init__(
        self, redis_url: str, watch_class: Callable[..., DirectoryWatch] = DirectoryWatch
    ) -> None:
        self.fs = FakeFreeSwitch().start()
        self.stop = threading.Event()
        self.client = redis.Redis.from_url(redis_url)
        node = EslNode("127.0.0.1", self.fs.port)
        self.worker = NodeWorker(node, settings((node,)), self.client, "r1", self.stop)
        self.flusher = ChangeFlusher(redis_url, self.send, self.stop)
        self.watch = watch_class(
            redis_url, "r1", 2.0, registration_hash="registrations", stop=self.stop
        )
        for thread in (self.worker, self.flusher, self.watch):
            thread.start()
        until(self.worker.connected.is_set, what="node consumed")
        until(self.flusher.subscribed.is_set, what="flusher subscribed")
        until(self.watch.leading.is_set, what="watch leads")

    def send(self, commands: Sequence[tuple[str, str]]) -> None:
        for command, argument in commands:
            self.worker.flush(command, argument)

    def flushes(self) -> list[str]:
        return [c for c in self.fs.commands if c.startswith("api xml_flush_cache")]

    def close(self) -> None:
        self.stop.set()
        for thread in (self.worker, self.flusher, self.watch):
            thread.join(timeout=10)
        self.client.close()
        self.fs.stop()


@pytest.fixture
def deployment(redis_url: str) -> Iterator[Deployment]:
    seed = redis.Redis.from_url(redis_url)
    seed.hset(KEY, mapping={"1001": extension("old", "alice"), "1002": extension("x")})
    seed.close()
    built = Deployment(redis_url)
    yield built
    built.close()


def test_a_hand_write_of_a_password_flushes_that_user(deployment: Deployment) -> None:
    started = time.monotonic()
    deployment.client.hset(KEY, "1001", extension("new", "alice"))  # redis-cli, a GUI
    until(lambda: len(deployment.flushes()) >= 2, what="the user flushed (id and alias)")
    took = time.monotonic() - started
    assert deployment.flushes() == [
        "api xml_flush_cache id 1001 example.com",
        "api xml_flush_cache id alice example.com",
    ]
    print(f"hand HSET -> xml_flush_cache on FreeSWITCH: {took * 1000:.0f} ms")


def test_an_api_write_is_flushed_once(deployment: Deployment) -> None:
    """The API publishes its change inside its own MULTI/EXEC, bracketed: the watch
    recognises it and does not publish it again."""
    pipe = deployment.client.pipeline(transaction=True)
    pipe.publish(redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, DOMAIN)
    pipe.hset(KEY, "1002", extension("api"))
    change = DirectoryChange("extension", "update", DOMAIN, "1002")
    pipe.publish(redis_keys.DIRECTORY_CHANGES_CHANNEL, change.to_json())
    pipe.execute()
    # a later hand write: once its flush is there, anything the watch did before is too
    deployment.client.hset(KEY, "1001", extension("later", "alice"))
    until(
        lambda: "api xml_flush_cache id 1001 example.com" in deployment.fs.commands,
        what="the later hand write flushed",
    )
    assert deployment.flushes().count("api xml_flush_cache id 1002 example.com") == 1


def test_a_hand_import_of_10000_extensions_is_a_bounded_number_of_flushes(
    deployment: Deployment,
) -> None:
    pipe = deployment.client.pipeline(transaction=False)
    for number in range(10000):
        pipe.hset(KEY, f"{20000 + number}", extension(f"pw{number}"))  # one HSET each
        if number % 500 == 499:
            pipe.execute()
    pipe.execute()
    until(
        lambda: len(deployment.watch.fields.get(KEY, {})) == 10002,
        timeout=60,
        what="the import digested",
    )
    deployment.client.hset(KEY, "1002", extension("after the import"))
    until(
        lambda: "api xml_flush_cache id 1002 example.com" in deployment.fs.commands,
        timeout=30,
        what="a precise flush after the import",
    )
    flushes = deployment.flushes()
    whole = flushes.count("api xml_flush_cache")
    print(f"10,000-extension hand import: {len(flushes) - 1} flush commands ({whole} whole)")
    assert whole >= 1
    # at most PRECISE_MAX ids per window, and a few windows: never one per extension
    assert len(flushes) - 1 <= 3 * PRECISE_MAX


def test_an_api_write_then_a_hand_write_back_to_the_old_value_is_flushed(
    redis_url: str,
) -> None:
    """The watch follows an API write's value without a read; a hand write that brings
    the old value back leaves the chunk as the last read saw it, and must still be seen."""
    seed = redis.Redis.from_url(redis_url)
    seed.hset(KEY, mapping={f"{2000 + n}": extension(f"p{n}") for n in range(1000)})
    seed.close()
    deployment = Deployment(redis_url)
    try:
        client = deployment.client
        pipe = client.pipeline(transaction=True)  # an API write, bracketed
        pipe.publish(redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, DOMAIN)
        pipe.hset(KEY, "2005", extension("by the api"))
        pipe.publish(
            redis_keys.DIRECTORY_CHANGES_CHANNEL,
            DirectoryChange("extension", "update", DOMAIN, "2005").to_json(),
        )
        pipe.execute()
        until(
            lambda: (
                deployment.watch.fields[KEY]["2005"] != deployment.watch.fields[KEY]["2006"]
                and not deployment.watch._api
            ),
            what="the API write followed",
        )
        client.hset(KEY, "2005", extension("p5"))  # back to what the last read saw, by hand
        until(
            lambda: "api xml_flush_cache id 2005 example.com" in deployment.fs.commands,
            what="the hand write flushed",
        )
    finally:
        deployment.close()


class HandWriteDuringRead(DirectoryWatch):
    """Once, after the first chunk of a read it publishes, writes two extensions by hand:
    one in the chunk just read (this read has missed it), one further on."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.written: list[str] = []

    def _step(self, client: redis.Redis, scan: HashScan) -> None:
        super()._step(client, scan)
        if self.written or not self._scan_publishes or scan.finished or scan.key != KEY:
            return
        read = next(iter(scan.chunks.values())).names
        behind = read[0]
        ahead = next(f"{3000 + n}" for n in range(1000) if f"{3000 + n}" not in read)
        writer = redis.Redis.from_url(self.redis_url)
        writer.hset(KEY, mapping={behind: extension("during"), ahead: extension("during")})
        writer.close()
        self.written = [behind, ahead]


def test_a_hand_write_during_a_chunked_read_is_flushed_and_named(redis_url: str) -> None:
    seed = redis.Redis.from_url(redis_url)
    seed.hset(KEY, mapping={f"{3000 + n}": extension(f"p{n}") for n in range(1000)})
    seed.close()
    # a directory replica's side, fed from its own subscription in Redis's order
    refreshed: list[str] = []
    dropped: list[str] = []

    class Actions:
        def invalidate_domain(self, domain: str) -> None:
            dropped.append(domain)

        def invalidate_shared(self) -> None:
            dropped.append("shared")

        def refresh_extension(self, domain: str, user_id: str) -> None:
            refreshed.append(user_id)

    hand = HandWrites(Actions(), schedule=lambda delay, callback: None)  # never expires
    router = NotificationRouter(Actions(), hand_writes=hand)
    listener = redis.Redis.from_url(redis_url).pubsub()  # type: ignore[no-untyped-call]
    listener.psubscribe(*router.patterns)
    listener.subscribe(*router.channels)
    deployment = Deployment(redis_url, HandWriteDuringRead)

    def replica_reads() -> None:
        while (message := listener.get_message(timeout=0.01)) is not None:
            if message["type"] in ("message", "pmessage"):
                router.handle(message["channel"].decode(), message["data"])

    def heard_alive() -> bool:
        replica_reads()
        return hand.hold("warm.example")  # held only once the watch is heard

    def flushed(user: str) -> bool:
        return f"api xml_flush_cache id {user} example.com" in deployment.fs.commands

    def named(user: str) -> bool:
        replica_reads()
        return user in refreshed

    try:
        watch = deployment.watch
        assert isinstance(watch, HandWriteDuringRead)
        until(heard_alive, what="the replica hears the watch")
        deployment.client.hset(KEY, "3999", extension("first"))  # starts a read
        until(lambda: len(watch.written) == 2, what="the writes during the read")
        for user in ["3999", *watch.written]:
            until(partial(flushed, user), what=f"{user} flushed")
            until(partial(named, user), what=f"{user} named to the replica")
        assert dropped == []  # every write answered precisely, none by a drop
    finally:
        deployment.close()
        listener.close()
