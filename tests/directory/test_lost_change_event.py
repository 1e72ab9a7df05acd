"""A write-begin whose change event never comes (on a Cluster the other nodes get both over
the cluster bus, which may lose one) must not hold back later writes by hand."""

from __future__ import annotations

import json

import redis

from cti import redis_keys
from directory_service.lookup.notifications import NotificationRouter
from tests.directory.service import name_values, parse_user, running_service, until
from tests.directory.test_domain_view import Recorder

KS = "__keyspace@0__:"


def _extension(password: str) -> str:
    return json.dumps({"param": {"password": password}})


def test_an_abandoned_bracket_is_unexplained() -> None:
    recorder = Recorder()
    router = NotificationRouter(recorder)
    assert not router.bracket_open
    router.handle(redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, b"d")
    router.handle(KS + "cti_exten@e", b"hset")
    assert router.bracket_open and recorder.calls == []
    router.abandon_bracket()
    assert not router.bracket_open
    assert recorder.calls == [("domain", "e")]


def test_a_hand_write_after_a_lost_change_event_is_seen(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = redis_keys.extensions("lost.example")
    client.hset(key, "1000", _extension("one"))
    try:
        with running_service(redis_url) as service:
            service.wait_until_live()

            def password() -> str:
                user = parse_user(service.lookup("lost.example", "1000"))[2]
                return name_values(user, "params", "param")["password"]

            assert password() == "one"
            assert password() == "one"
            assert service.cache_count("hit") >= 1
            client.publish(redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, "other.example")
            client.hset(key, "1000", _extension("two"))  # by hand, inside that open bracket
            until(lambda: password() == "two", timeout=10)
            assert service.metric("cti_directory_cache_live") == 1.0
    finally:
        client.close()
