"""Fuzzing the real xml_curl edge (``python -m directory_service``, real HTTP, real
Redis with broken entries beside good ones): mutated captured bodies never get a 5xx
but the documented 503, every 200 is well-formed XML and no user carries another's
secret."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given

from cti import redis_keys
from tests.directory.service import Service, running_service
from tests.fuzz.strategies import CASES, xml_curl_bodies
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


@given(xml_curl_bodies())
def test_the_edge_answers_any_mutated_body(service: Service, body: bytes) -> None:
    CASES["HTTP body"] += 1
    status, document = service.post(body)
    assert status in (200, 503), (status, body)
    if status == 200:
        check_document(document)
