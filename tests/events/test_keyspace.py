"""Key names of the event service (pure): the historic names without a hash tag, one
cluster slot for everything with one, and the start-up check that says which key is off."""

from __future__ import annotations

from dataclasses import replace

import pytest
from redis.crc import key_slot

from cti import redis_keys
from cti.config import ConfigError, EslNode, EventSettings, PublishTarget
from event_service.ingest.keyspace import check_one_slot, event_keys

TWO_NODES = (EslNode("127.0.0.1", 8021), EslNode("127.0.0.2", 8021))


def tagged(tag: str = "cti", registration_list: str = "") -> EventSettings:
    base = EventSettings(nodes=TWO_NODES)
    return replace(
        base,
        registration=PublishTarget(f"{{{tag}}}registrations", list=registration_list),
        call=replace(base.call, hash=f"{{{tag}}}calls"),
    )


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("registrations", None),
        ("{cti}registrations", "cti"),
        ("my{cti}regs{x}", "cti"),
        ("{}registrations", None),  # empty braces: Redis hashes the whole key
        ("{cti", None),
        ("}{cti}", "cti"),
    ],
)
def test_hash_tag_is_what_redis_cluster_hashes(key: str, tag: str | None) -> None:
    assert redis_keys.hash_tag(key) == tag
    if tag is not None:
        assert key_slot(key.encode()) == key_slot(tag.encode())


def test_untagged_hashes_keep_the_historic_names() -> None:
    assert redis_keys.events_log("registrations") == redis_keys.EVENTS_LOG_STREAM
    assert redis_keys.EVENTS_LOG_STREAM == "cti:events:log"
    assert redis_keys.node_lease("10.0.0.1:8021", "registrations") == (
        "cti:events:lease:10.0.0.1:8021"
    )
    assert redis_keys.registration_devices("registrations") == "{registrations}:devices"
    assert redis_keys.call_channels("calls") == "{calls}:channels"


def test_tagged_hashes_give_every_key_their_tag() -> None:
    keys = event_keys(tagged(registration_list="{cti}registration-events"))
    assert keys == {
        "events.registration.hash": "{cti}registrations",
        "events.call.hash": "{cti}calls",
        "registration devices index": "{cti}registrations:devices",
        "call channels index": "{cti}calls:channels",
        "change log": "{cti}:events:log",
        "events.registration.list": "{cti}registration-events",
        "lease of 127.0.0.1:8021": "{cti}:events:lease:127.0.0.1:8021",
        "lease of 127.0.0.2:8021": "{cti}:events:lease:127.0.0.2:8021",
    }
    assert {key_slot(k.encode()) for k in keys.values()} == {key_slot(b"cti")}
    check_one_slot(tagged(registration_list="{cti}registration-events"))  # passes


def test_default_names_are_refused_for_a_cluster_with_how_to_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        check_one_slot(EventSettings(nodes=TWO_NODES))
    message = str(caught.value)
    assert "one hash slot" in message
    assert "events.call.hash 'calls'" in message
    assert "change log 'cti:events:log'" in message
    assert '"{cti}registrations"' in message


def test_a_list_outside_the_tag_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        check_one_slot(tagged(registration_list="registration-events"))
    message = str(caught.value)
    assert "events.registration.list 'registration-events'" in message
    assert "events.call.hash" not in message  # only what is off


def test_hashes_with_different_tags_are_refused() -> None:
    settings = tagged()
    settings = replace(settings, call=replace(settings.call, hash="{other}calls"))
    with pytest.raises(ConfigError, match=r"events\.call\.hash '\{other\}calls'"):
        check_one_slot(settings)
