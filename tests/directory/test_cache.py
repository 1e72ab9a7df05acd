"""The cache's race rules, in-process against a real Redis (no HTTP, no subscriber: the
test plays the subscriber's part by calling the invalidation methods itself)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio

from cti import redis_keys
from directory_service.lookup.cache import DirectoryCache
from directory_service.lookup.request import DirectoryRequest
from tests.directory.service import name_values, parse_user

DOMAIN = "cache.example"


def lookup(user: str) -> DirectoryRequest:
    return DirectoryRequest(
        section="directory",
        tag_name="domain",
        key_name="name",
        key_value=DOMAIN,
        key="id",
        user=user,
        action="sip_auth",
    )


def password(document: bytes) -> str:
    return name_values(parse_user(document)[2], "params", "param")["password"]


def store(url: str, user: str, value: str) -> None:
    client = redis.Redis.from_url(url)
    client.hset(redis_keys.extensions(DOMAIN), user, json.dumps({"param": {"password": value}}))
    client.close()


def with_cache(url: str, body: Callable[[DirectoryCache], Awaitable[None]]) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(url)
        cache = DirectoryCache(client, {}, lambda *error: None)
        cache.go_live()
        try:
            await body(cache)
        finally:
            await client.aclose()

    asyncio.run(run())


async def until_loading(cache: DirectoryCache) -> None:
    """Until the domain's load is in flight (it first awaits the shared data: a Redis
    round trip, which on a busy machine outlasts any fixed number of loop turns)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if DOMAIN in cache._loads:
            return
        await asyncio.sleep(0)  # one loop turn: the load takes at least one round trip
    raise AssertionError("the domain load never started")
    raise AssertionError("the load never started")


def test_a_load_overtaken_by_an_invalidation_is_not_kept(redis_url: str) -> None:
    store(redis_url, "1000", "old")

    async def body(cache: DirectoryCache) -> None:
        first = asyncio.create_task(cache.answer(lookup("1000")))
        await until_loading(cache)
        cache.invalidate_domain(DOMAIN)  # a write landed while the load was in flight
        await first
        assert cache.cached_answer(lookup("1000")) is None  # not installed
        store(redis_url, "1000", "new")
        assert password(await cache.answer(lookup("1000"))) == "new"
        assert cache.cached_answer(lookup("1000")) is not None  # this one is kept

    with_cache(redis_url, body)


def test_concurrent_misses_share_one_load(redis_url: str) -> None:
    store(redis_url, "1000", "p")

    async def body(cache: DirectoryCache) -> None:
        answers = await asyncio.gather(*(cache.answer(lookup("1000")) for _ in range(20)))
        assert {password(a) for a in answers} == {"p"}
        assert cache.stats.misses == 20  # all missed, but ...
        assert len(cache._views) == 1  # ... one view came out of one load

    with_cache(redis_url, body)


def test_precise_refresh_patches_in_place_and_lookups_wait_for_it(redis_url: str) -> None:
    store(redis_url, "1000", "a")
    store(redis_url, "1001", "b")

    async def body(cache: DirectoryCache) -> None:
        await cache.answer(lookup("1000"))
        view = cache._views[DOMAIN]
        store(redis_url, "1000", "c")
        cache.refresh_extension(DOMAIN, "1000")
        assert cache.cached_answer(lookup("1001")) is None  # waits for the refetch
        assert password(await cache.answer(lookup("1000"))) == "c"
        assert cache._views[DOMAIN] is view  # patched, not reloaded
        assert password(cache.cached_answer(lookup("1001")) or b"") == "b"

    with_cache(redis_url, body)


def test_going_dark_flushes_and_reads_redis_every_time(redis_url: str) -> None:
    store(redis_url, "1000", "one")

    async def body(cache: DirectoryCache) -> None:
        await cache.answer(lookup("1000"))
        cache.go_dark()
        store(redis_url, "1000", "two")  # a change the (lost) subscriber would have missed
        assert cache.cached_answer(lookup("1000")) is None
        assert password(await cache.answer(lookup("1000"))) == "two"
        assert cache.stats.uncached == 1

    with_cache(redis_url, body)


def test_refresh_racing_a_template_rerender_is_not_lost(redis_url: str) -> None:
    store(redis_url, "1000", "old")
    store(redis_url, "1001", "b")

    async def body(cache: DirectoryCache) -> None:
        await cache.answer(lookup("1000"))
        cache.invalidate_shared()  # a template changed: the next lookup re-renders
        other = asyncio.create_task(cache.answer(lookup("1001")))
        for _ in range(1000):
            if "shared" in cache._shared_loads:
                break
            await asyncio.sleep(0)
        store(redis_url, "1000", "new")
        cache.refresh_extension(DOMAIN, "1000")  # an API write lands meanwhile
        assert password(await other) == "b"
        assert password(await cache.answer(lookup("1000"))) == "new"

    with_cache(redis_url, body)


def test_overlapping_patches_keep_the_domain_and_the_latest_value_wins(redis_url: str) -> None:
    """A writer at 100/s overlaps patches; none may cost the whole domain its cache."""
    for user in ("1000", "1001", "1002"):
        store(redis_url, user, f"{user}-v0")

    async def body(cache: DirectoryCache) -> None:
        await cache.answer(lookup("1000"))
        view = cache._views[DOMAIN]
        store(redis_url, "1000", "1000-v1")
        cache.refresh_extension(DOMAIN, "1000")
        store(redis_url, "1001", "1001-v1")
        cache.refresh_extension(DOMAIN, "1001")  # before the first patch is back
        store(redis_url, "1000", "1000-v2")
        cache.refresh_extension(DOMAIN, "1000")  # the same extension again
        assert len(cache._refetching[DOMAIN]) == 3
        assert password(await cache.answer(lookup("1000"))) == "1000-v2"
        assert cache._views[DOMAIN] is view  # patched in place, never reloaded
        assert DOMAIN not in cache._refetching
        assert password(cache.cached_answer(lookup("1001")) or b"") == "1001-v1"
        assert password(cache.cached_answer(lookup("1002")) or b"") == "1002-v0"
        assert cache.stats.misses == 1  # only the very first load

    with_cache(redis_url, body)
