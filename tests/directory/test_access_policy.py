"""Allow-list and basic-auth decisions: pure."""

from __future__ import annotations

import base64

from cti.config import HttpSettings
from directory_service.lookup.http import AccessPolicy, client_ip


def test_client_address_forms() -> None:
    assert client_ip("127.0.0.1:5060") == "127.0.0.1"
    assert client_ip("[::1]:5060") == "::1"
    assert client_ip("::1:5060") == "::1"


def test_allow_list_by_network_whatever_the_source_port() -> None:
    policy = AccessPolicy(HttpSettings(allow=("10.0.0.0/8", "::1/128")))
    assert policy.address_allowed("10.1.2.3:1111")
    assert policy.address_allowed("10.1.2.3:2222")
    assert policy.address_allowed("[::1]:1")
    assert not policy.address_allowed("192.0.2.1:1111")
    assert not policy.address_allowed("garbage")
    assert AccessPolicy(HttpSettings()).address_allowed("192.0.2.1:1")


def test_basic_auth() -> None:
    policy = AccessPolicy(HttpSettings(username="fs", password="p:w"))
    good = "Basic " + base64.b64encode(b"fs:p:w").decode()
    assert policy.authorized(good)
    assert not policy.authorized(None)
    assert not policy.authorized("Basic " + base64.b64encode(b"fs:other").decode())
    assert AccessPolicy(HttpSettings()).authorized(None)


def test_ipv4_clients_of_a_dual_stack_listener_match_ipv4_networks() -> None:
    """Listening on ``[::]``, an IPv4 client shows as ``::ffff:a.b.c.d``: it is that IPv4
    address for the allow-list."""
    policy = AccessPolicy(HttpSettings(allow=("10.0.0.0/8",)))
    assert policy.address_allowed("[::ffff:10.1.2.3]:5000")
    assert policy.address_allowed("::ffff:10.1.2.3:5000")
    assert not policy.address_allowed("[::ffff:192.0.2.1]:5000")
