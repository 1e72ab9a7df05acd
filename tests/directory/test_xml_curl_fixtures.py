"""Every captured mod_xml_curl body against the real service and a real Redis holding the
capture's users 1000 and 1001 (password 1234)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from cti.config import DEFAULT_DIAL_STRING
from tests.directory.service import (
    Service,
    is_not_found,
    name_values,
    parse_user,
    running_service,
)
from tests.support import RedisServer, xml_curl_fixtures

DOMAIN = "127.0.0.1"
USERS: dict[str, dict[str, dict[str, object]]] = {
    "1000": {
        "param": {"password": "1234", "vm-password": "1000", "allow-empty-password": False},
        "variable": {
            "toll_allow": "domestic,international,local",
            "user_context": "default",
            "effective_caller_id_name": "Extension 1000",
            "callgroup": "techsupport",
        },
        "attribute": {"cacheable": "10000", "number-alias": "alice"},
    },
    "1001": {
        "param": {"password": "1234", "max-registrations-per-extension": 2},
        "variable": {"user_context": "default", "sip-force-contact": "NDLB-tls-connectile"},
        "attribute": {},
    },
}
EXPECTED = {
    "01": None,  # purpose=gateways: none stored
    "02": None,  # purpose=network-list: no user has a cidr attribute
    "03": "1000",
    "04": "1001",
    "05": None,  # unknown 1005
    "06": "1000",
    "07": "1001",  # user_data lookup without action
    "08": "1001",  # user_call
    "09": "1000",
    "10": "1001",
}


def as_freeswitch(values: dict[str, object]) -> dict[str, str]:
    return {
        k: ("true" if v is True else "false" if v is False else str(v)) for k, v in values.items()
    }


@pytest.fixture(scope="module")
def service(redis_server: RedisServer) -> Iterator[Service]:
    with running_service(redis_server.url) as svc:
        yield svc


@pytest.fixture
def seeded(redis_url: str, service: Service) -> Service:
    client = redis.Redis.from_url(redis_url)
    client.hset(f"cti_exten@{DOMAIN}", mapping={k: json.dumps(v) for k, v in USERS.items()})
    client.close()
    return service


def test_every_fixture_fixture_is_covered() -> None:
    assert sorted(name[:2] for name, _ in xml_curl_fixtures()) == sorted(EXPECTED)


@pytest.mark.parametrize(("name", "body"), xml_curl_fixtures(), ids=lambda v: str(v)[:20])
def test_captured_request_gets_the_right_document(seeded: Service, name: str, body: bytes) -> None:
    status, document = seeded.post(body, {"User-Agent": "freeswitch-xml/1.0"})
    assert status == 200
    expected = EXPECTED[name[:2]]
    if expected is None:
        assert is_not_found(document), document
        return
    domain_name, domain, user = parse_user(document)
    assert domain_name == DOMAIN
    assert user.get("id") == expected
    stored = USERS[expected]
    attributes = {k: v for k, v in user.attrib.items() if k != "id"}
    assert attributes == as_freeswitch(stored["attribute"])
    assert name_values(user, "params", "param") == as_freeswitch(stored["param"])
    assert name_values(user, "variables", "variable") == as_freeswitch(stored["variable"])
    # Domain params make `user/1001@127.0.0.1` bridges work (user_call reads dial-string).
    assert name_values(domain, "params", "param") == {"dial-string": DEFAULT_DIAL_STRING}
