"""REDIS_URL forms for Sentinel and Cluster: parsed without any network."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from cti import redis_keys
from cti.config import ConfigError, load_settings, parse_settings
from cti.redis_client import (
    RedisTarget,
    RedisUrlError,
    mode_of,
    parse_url,
    redacted,
    with_password,
)


def test_sentinel_url_with_everything() -> None:
    target = parse_url(
        "redis+sentinel://app:p%40ss%2Cword@s1:26380,s2,[::1]:26381/cti-master/3"
        "?sentinel_password=sent&sentinel_username=watch"
    )
    assert target == RedisTarget(
        mode="sentinel",
        nodes=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        service_name="cti-master",
        db=3,
        username="app",
        password="p@ss,word",
        sentinel_username="watch",
        sentinel_password="sent",
    )


def test_sentinel_db_defaults_to_zero_and_password_only_userinfo() -> None:
    target = parse_url("rediss+sentinel://:secret@s1/mymaster")
    assert (target.ssl, target.db, target.username, target.password) == (
        True,
        0,
        None,
        "secret",
    )


def test_cluster_url_defaults_port_6379() -> None:
    target = parse_url("redis+cluster://:pw@n1,n2:7001,n3:7002/")
    assert target.mode == "cluster"
    assert target.nodes == (("n1", 6379), ("n2", 7001), ("n3", 7002))
    assert target.password == "pw"
    assert parse_url("redis+cluster://n1/0").db == 0


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://s1:26379", "master-name"),
        ("redis+sentinel://s1/m/0/extra", "master-name"),
        ("redis+sentinel://s1/m/zero", "database must be a number"),
        ("redis+cluster://n1/2", "only database 0"),
        ("redis+cluster://n1:notaport", "bad port"),
        ("redis+cluster://n1:70000", "bad port"),
        ("redis+cluster://n1,,n2", "empty host"),
        ("redis+cluster://n1?sentinel_password=x", "not supported in cluster mode"),
        ("redis+sentinel://s1/m?socket_timeout=1", "not supported in sentinel mode"),
        ("redis://h:6379/0", "not a redis.sentinel"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, problem: str) -> None:
    with pytest.raises(RedisUrlError, match=problem):
        parse_url(url)


def test_errors_never_show_passwords() -> None:
    with pytest.raises(RedisUrlError) as caught:
        parse_url("redis+sentinel://:topsecret@s1:bad/m?sentinel_password=alsosecret")
    assert "topsecret" not in str(caught.value)
    assert "alsosecret" not in str(caught.value)
    assert redacted("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"


def test_mode_of_keeps_redis_py_schemes_single() -> None:
    assert mode_of("redis://h/0") == mode_of("rediss://h/0") == mode_of("unix:///s") == "single"
    assert mode_of("REDIS+CLUSTER://h") == "cluster"
    assert mode_of("rediss+sentinel://h/m") == "sentinel"


def test_derived_keys_share_the_extensions_hash_slot() -> None:
    """What makes one-domain transactions legal on a cluster."""
    for domain in ("example.com", "10.0.0.1", "a:b", "xn--bcher-kva.example"):
        slot = key_slot(redis_keys.extensions(domain).encode())
        assert key_slot(redis_keys.aliases(domain).encode()) == slot
        assert key_slot(redis_keys.template_refs(domain).encode()) == slot


def test_redis_password_from_the_environment_joins_any_url_form() -> None:
    """``REDIS_PASSWORD`` (from a Secret) is percent-encoded into the URL, so a password with
    URL syntax in it reaches Redis unchanged."""
    secret = "p@ss/w:rd,x?#%"
    env = {"REDIS_URL": "redis+sentinel://s1,s2:26380/cti-master/0", "REDIS_PASSWORD": secret}
    url = load_settings(None, env, "events").redis_url
    assert parse_url(url).password == secret
    assert parse_url(url).nodes == (("s1", 26379), ("s2", 26380))
    plain = with_password("redis://app:old@h:6379/2", secret)
    pool_kwargs = redis.Redis.from_url(plain).connection_pool.connection_kwargs
    assert (pool_kwargs["username"], pool_kwargs["password"], pool_kwargs["db"]) == (
        "app",
        secret,
        2,
    )
    assert parse_url(with_password("redis+cluster://n1,n2", "x")).password == "x"


def test_redis_password_unset_or_empty_leaves_the_url_alone() -> None:
    env = {"REDIS_URL": "redis://:keep@h:6379/0", "REDIS_PASSWORD": ""}
    assert load_settings(None, env, "directory").redis_url == "redis://:keep@h:6379/0"


def test_redis_password_with_a_broken_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL") as caught:
        load_settings(None, {"REDIS_URL": "not-a-url", "REDIS_PASSWORD": "s3cret"}, "directory")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"REDIS_URL": "redis+sentinel://s1:26379"}, "REDIS_URL: .*master-name"),
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL: .*scheme must be"),
        ({"REDIS_URL": "redis+cluster://:pw@n1:port"}, "REDIS_URL: .*bad port"),
    ],
)
def test_a_bad_redis_url_fails_at_config_load(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        load_settings(None, env, "events")
    assert ":pw@" not in str(caught.value)


def test_a_bad_redis_url_in_the_file_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"cti.json: line 1: redis.url: .*only database 0"):
        parse_settings('{"redis": {"url": "redis+cluster://n1/3"}}', "cti.json")
    for good in ("redis://h/1", "rediss://h", "unix:///run/redis.sock", "redis+cluster://n1"):
        assert load_settings(None, {"REDIS_URL": good}, "directory").redis_url == good
