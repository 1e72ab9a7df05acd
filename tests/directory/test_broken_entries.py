"""A broken stored entry is unusable alone, everywhere: found by fuzzing (issue 9, defects
1, 2 and 8). Pure: domain views over raw bytes, no sockets."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from cti import redis_keys
from cti.directory_entry import ExtensionFormatError, parse_entry
from directory_service.lookup import render
from directory_service.lookup.directory import DomainData, DomainView, SharedData
from directory_service.lookup.request import DirectoryRequest
from directory_service.unusable import UnusableEntryLog
from tests.directory.service import is_not_found, name_values, parse_user

DOMAIN = "d.example"
KEY = redis_keys.extensions(DOMAIN)
DEEP = ("[" * 100_000 + "]" * 100_000).encode()
"""Nested far beyond what the JSON parser's recursion takes."""
DEEP_IN_OBJECT = b'{"template": "t", "attribute": {"number-alias": "x"}, "z": ' + DEEP + b"}"


def raw(**sections: Any) -> bytes:
    return json.dumps(sections).encode()


Errors = list[tuple[str, str, str]]


def view(extensions: dict[str, bytes], errors: Errors, **shared: dict[str, bytes]) -> DomainView:
    return DomainView(
        DomainData(DOMAIN, dict(extensions)),
        SharedData(shared.get("templates", {}), shared.get("domains", {})),
        {},
        lambda key, field, problem: errors.append((key, field, problem)),
    )


def request(**fields: str) -> DirectoryRequest:
    return DirectoryRequest(section="directory", domain=DOMAIN, **fields)


def members(document: bytes) -> list[str]:
    return [u.get("id") or "" for u in ET.fromstring(document).iter("user")]


@pytest.mark.parametrize("value", [DEEP, DEEP_IN_OBJECT, b"[" * 2000])
def test_deeply_nested_json_is_a_format_error(value: bytes) -> None:
    with pytest.raises(ExtensionFormatError):
        parse_entry(value)


def test_deep_entry_breaks_only_itself_even_with_alias_and_template() -> None:
    errors: Errors = []
    good = raw(param={"password": "ok"}, attribute={"number-alias": "2000"})
    v = view({"1000": good, "bad": DEEP_IN_OBJECT}, errors, templates={"t": raw()})
    assert is_not_found(v.answer(request(user="bad")))
    assert parse_user(v.answer(request(user="2000")))[2].get("id") == "1000"  # alias
    assert parse_user(v.answer(request(user="1000")))[2].get("id") == "1000"
    assert is_not_found(v.answer(request(user="nobody")))
    assert {(k, f) for k, f, _ in errors} == {(KEY, "bad")}


@pytest.mark.parametrize("bad_id", ["10\x0101", "bad\udcff", "x\ufffe"])
def test_an_unservable_id_leaves_the_group_and_network_list_to_the_others(bad_id: str) -> None:
    errors: Errors = []
    entry = raw(variable={"callgroup": "sales"}, attribute={"cidr": "10.0.0.1/32"})
    v = view({"1000": entry, bad_id: entry}, errors)
    assert members(v.answer(request(action="group_call", group="sales"))) == ["1000"]
    network = v.answer(request(purpose="network-list"))
    assert members(network) == ["1000"]
    assert {(k, f) for k, f, _ in errors} == {(KEY, bad_id)}  # its own key and field


@pytest.mark.parametrize("cidr", ["10.0.0.\x01/32", "not a network", "10.0.0.1/99"])
def test_an_unusable_cidr_leaves_the_network_list_to_the_others(cidr: str) -> None:
    errors: Errors = []
    v = view(
        {
            "1000": raw(attribute={"cidr": "10.0.0.1/32"}),
            "1001": raw(attribute={"cidr": cidr}, param={"password": "p"}),
        },
        errors,
    )
    document = v.answer(request(purpose="network-list"))
    assert members(document) == ["1000"]
    assert [(k, f) for k, f, _ in errors] == [(KEY, "1001")]


def test_a_value_xml_cannot_carry_is_blamed_on_its_own_entry() -> None:
    errors: Errors = []
    v = view(
        {"1000": raw(param={"password": "a\x01b"}), "1001": raw(param={"password": "ok"})},
        errors,
        templates={"t": raw(variable={"v": "\x02"})},
    )
    v.data.extensions["1002"] = raw(template="t")
    assert is_not_found(v.answer(request(user="1000")))
    assert is_not_found(v.answer(request(user="1002")))
    user = parse_user(v.answer(request(user="1001")))[2]
    assert name_values(user, "params", "param") == {"password": "ok"}
    assert sorted((k, f) for k, f, _ in errors) == [(KEY, "1000"), (redis_keys.TEMPLATES, "t")]


def test_domain_settings_xml_cannot_carry_are_ignored_not_fatal() -> None:
    errors: Errors = []
    v = view(
        {"1000": raw(param={"password": "ok"})},
        errors,
        domains={DOMAIN: raw(param={"dial-string": "\x00"})},
    )
    assert parse_user(v.answer(request(user="1000")))[2].get("id") == "1000"
    assert [(k, f) for k, f, _ in errors] == [(redis_keys.DOMAINS, DOMAIN)]


def test_a_group_name_from_the_request_is_never_blamed_on_a_stored_entry() -> None:
    errors: Errors = []
    v = view({"1000": raw(variable={"callgroup": "a\x01"})}, errors)
    assert is_not_found(v.answer(request(action="group_call", group="a\x01")))
    assert errors == []


def test_problems_never_carry_a_long_input() -> None:
    errors: Errors = []
    long_name = "1" + "n" * 10_000  # not an XML name
    v = view({"1000": raw(attribute={long_name: "v"})}, errors)
    assert is_not_found(v.answer(request(user="1000")))
    ((_, _, problem),) = errors
    assert len(problem) < 200


def test_not_found_constant_is_well_formed() -> None:
    assert is_not_found(render.NOT_FOUND)


def test_an_unusable_entry_is_logged_once_per_interval_by_key_and_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    reporter = UnusableEntryLog(repeat_seconds=60, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="directory_service"):
        for _ in range(1000):
            reporter.report(KEY, "1000", "not JSON: nested too deeply")
        reporter.report(KEY, "1001", "not JSON")
        now[0] = 61
        reporter.report(KEY, "1000", "not JSON: nested too deeply")
    fields = [r.redis_field for r in caplog.records]  # type: ignore[attr-defined]
    assert fields == ["1000", "1001", "1000"]
    assert all(KEY in r.getMessage() for r in caplog.records)
