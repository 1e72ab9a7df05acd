"""Fuzzing the real xml_curl edge (``python -m directory_service``, real HTTP, real
Redis with broken entries beside good ones): mutated captured bodies never get a 5xx
but the documented 503, every 200 is well-formed XML and no user carries another's
secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from cti import redis_keys
from tests.directory.service import Service, running_service
from tests.fuzz.strategies import CASES, STORED_IDS, stored_documents, xml_curl_bodies
from tests.fuzz.test_fuzz_directory import DOMAIN, GOOD, SETTINGS, TEMPLATES, check_document
from tests.support import RedisServer, reset_redis

pytestmark = pytest.mark.timeout(1800)
BROKEN = {
    "1003": '{"template": "t", "attribute": {"number-alias": "x"}, "z": '
    + "[" * 5000
    + "]" * 5000
    + "}",
    "10\x0104": json.dumps({"variable": {"callgroup": "sales"}}),
    "1005": json.dumps({"attribute": {"cidr": "nonsense"}, "param": {"password": "\x01"}}),
}


@pytest.fixture(scope="module")
def service(redis_server: RedisServer) -> Iterator[Service]:
    reset_redis(redis_server)
    client = redis.Redis.from_url(redis_server.url)
    key = redis_keys.extensions(DOMAIN)
    stored: list[tuple[str, str | bytes, str | bytes]] = [
        *((key, i, json.dumps(v)) for i, v in GOOD.items()),
        *((key, i, v) for i, v in BROKEN.items()),
        (key, b"\xff\xfe", b"{}"),
        *((redis_keys.TEMPLATES, n, v) for n, v in TEMPLATES.items()),
        *((redis_keys.DOMAINS, n, v) for n, v in SETTINGS.items()),
    ]
    for hash_key, field, value in stored:
        client.hset(hash_key, field, value)
    client.close()
    with running_service(redis_server.url) as svc:
        svc.wait_until_live()
        yield svc
        log = svc.log_path.read_text(errors="replace")
        assert "Traceback" not in log and "unexpected error" not in log


REFERENCE_USERS = ["1000", "1001", "AL1001", "1002"]


@pytest.fixture(scope="module")
def reference(service: Service) -> dict[str, bytes]:
    """The good users' answers with the broken entries already stored."""
    return {user: service.lookup(DOMAIN, user) for user in REFERENCE_USERS}


@given(xml_curl_bodies())
def test_the_edge_answers_any_mutated_body(service: Service, body: bytes) -> None:
    CASES["HTTP body"] += 1
    status, document = service.post(body)
    assert status in (200, 503), (status, body)
    if status == 200:
        check_document(document)


@given(st.dictionaries(STORED_IDS, stored_documents(), min_size=1, max_size=3))
def test_values_written_by_hand_never_change_another_users_answer(
    service: Service,
    reference: dict[str, bytes],
    redis_server: RedisServer,
    extra: dict[str, bytes],
) -> None:
    """Through the real cache and its invalidation: whatever is written beside them, at
    any moment (before or after the notification arrives), the good users' answers are
    exactly what they were."""
    CASES["HTTP stored value"] += 1
    taken = {u.lower() for u in REFERENCE_USERS} | {i.lower() for i in BROKEN}
    # (an entry claiming AL1001 as its alias legitimately competes for it: not broken)
    extra = {
        i: v for i, v in extra.items() if i.lower() not in taken and b"al1001" not in v.lower()
    }
    client = redis.Redis.from_url(redis_server.url)
    key = redis_keys.extensions(DOMAIN)
    fields = [i.encode("utf-8", "surrogateescape") for i in extra]
    try:
        for field, value in zip(fields, extra.values(), strict=True):
            client.hset(key, field, value)
        for user in REFERENCE_USERS:
            assert service.lookup(DOMAIN, user) == reference[user], user
        for field in fields:
            quoted = quote_from_bytes(field)
            status, document = service.post(f"section=directory&domain={DOMAIN}&user={quoted}")
            assert status in (200, 503), status
            if status == 200:
                check_document(document)
    finally:
        if fields:
            client.hdel(key, *fields)
        client.close()
