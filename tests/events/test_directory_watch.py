"""Writes by hand to the directory reach FreeSWITCH's cache (``event_service.directory_watch``):
a hand ``HSET`` of a cached user's password flushes exactly that user (and its aliases);
an API write is not flushed twice; a 10,000-extension import is a bounded number of flushes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
import redis

from cti import redis_keys
from cti.changes import DirectoryChange
from cti.config import EslNode
from event_service.directory_watch import (
    PRECISE_MAX,
    DirectoryWatch,
    digests,
    extension_changes,
)
from event_service.flush import ChangeFlusher
from event_service.worker import NodeWorker
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


class Deployment:
    """One FreeSWITCH, one node worker, the change flusher and the directory watch."""

    def __init__(self, redis_url: str) -> None:
        self.fs = FakeFreeSwitch().start()
        self.stop = threading.Event()
        self.client = redis.Redis.from_url(redis_url)
        node = EslNode("127.0.0.1", self.fs.port)
        self.worker = NodeWorker(node, settings((node,)), self.client, "r1", self.stop)
        self.flusher = ChangeFlusher(redis_url, self.send, self.stop)
        self.watch = DirectoryWatch(
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
