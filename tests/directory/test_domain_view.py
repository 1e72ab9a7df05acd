"""What a domain view answers, and how it applies changes: pure, no sockets."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from cti.changes import DirectoryChange
from directory_service.lookup import render
from directory_service.lookup.directory import DomainData, DomainView, SharedData
from directory_service.lookup.notifications import Canary, NotificationRouter, merged_notify_flags
from directory_service.lookup.request import DirectoryRequest
from tests.directory.service import is_not_found, name_values, parse_user

DEFAULTS = {"dial-string": "{x}"}


def raw(**sections: Any) -> bytes:
    return json.dumps(sections).encode()


def view(
    extensions: dict[str, bytes],
    templates: dict[str, bytes] | None = None,
    domains: dict[str, bytes] | None = None,
    errors: list[tuple[str, str, str]] | None = None,
) -> DomainView:
    sink = errors.append if errors is not None else (lambda e: None)
    return DomainView(
        DomainData("d", dict(extensions)),
        SharedData(templates or {}, domains or {}),
        DEFAULTS,
        lambda key, field, problem: sink((key, field, problem)),
    )


def user_req(user: str, action: str = "sip_auth", key: str = "id") -> DirectoryRequest:
    return DirectoryRequest(
        section="directory",
        tag_name="domain",
        key_name="name",
        key_value="d",
        key=key,
        user=user,
        domain="d",
        action=action,
    )


def test_lookup_by_alias_and_case_insensitive_id() -> None:
    v = view(
        {
            "Alice": raw(param={"password": "a"}, attribute={"number-alias": "2001"}),
            "1000": raw(param={"password": "b"}),
        }
    )
    assert parse_user(v.answer(user_req("alice")))[2].get("id") == "Alice"
    assert parse_user(v.answer(user_req("2001")))[2].get("id") == "Alice"
    assert parse_user(v.answer(user_req("1000", "message-count")))[2].get("id") == "1000"
    assert is_not_found(v.answer(user_req("1005")))


def test_template_values_are_inherited_and_the_extension_wins() -> None:
    templates = {
        "agents": raw(
            param={"password": "t", "vm-password": "9"},
            variable={"user_context": "agents"},
            attribute={"cacheable": "5000"},
        )
    }
    v = view({"1000": raw(template="agents", param={"password": "own"})}, templates)
    _, _, user = parse_user(v.answer(user_req("1000")))
    assert name_values(user, "params", "param") == {"password": "own", "vm-password": "9"}
    assert name_values(user, "variables", "variable") == {"user_context": "agents"}
    assert user.get("cacheable") == "5000"


def test_missing_template_means_not_found_not_a_user_without_params() -> None:
    errors: list[tuple[str, str, str]] = []
    v = view({"1000": raw(template="gone", param={})}, errors=errors)
    assert is_not_found(v.answer(user_req("1000")))
    assert errors == [("cti_exten@d", "1000", "template 'gone' does not exist")]


def test_broken_json_answers_not_found_and_names_key_and_field_only() -> None:
    errors: list[tuple[str, str, str]] = []
    v = view(
        {
            "1000": b'{"param": {"password": "s3cret"',
            "1001": raw(param={"password": "x"}),
            "1002": raw(param={"password": ["s3cret"]}),
        },
        errors=errors,
    )
    assert is_not_found(v.answer(user_req("1000")))
    assert is_not_found(v.answer(user_req("1002")))
    assert parse_user(v.answer(user_req("1001")))[2].get("id") == "1001"
    assert [(k, f) for k, f, _ in errors] == [("cti_exten@d", "1000"), ("cti_exten@d", "1002")]
    assert "password" in errors[1][2] and all("s3cret" not in p for _, _, p in errors)


def test_domain_settings_override_defaults_and_bare_domain_lookup() -> None:
    domains = {"d": raw(param={"dial-string": "{custom}"}, variable={"record": "yes"})}
    v = view({}, domains=domains)
    bare = DirectoryRequest(section="directory", tag_name="domain", key_name="name", key_value="d")
    domain = ET.fromstring(v.answer(bare)).find("./section/domain")
    assert domain is not None and domain.get("name") == "d"
    assert name_values(domain, "params", "param") == {"dial-string": "{custom}"}
    assert name_values(domain, "variables", "variable") == {"record": "yes"}
    assert is_not_found(view({}).answer(bare))  # unknown domain


def test_group_call_lists_members_as_pointers() -> None:
    v = view(
        {
            "1000": raw(variable={"callgroup": "sales, support"}),
            "1001": raw(),
            "1002": raw(variable={"callgroup": "Sales"}),
        }
    )
    request = DirectoryRequest(
        section="directory",
        tag_name="domain",
        key_name="name",
        key_value="d",
        action="group_call",
        group="sales",
    )
    group = ET.fromstring(v.answer(request)).find("./section/domain/groups/group")
    assert group is not None and group.get("name") == "sales"
    assert [(u.get("id"), u.get("type")) for u in group.findall("./users/user")] == [
        ("1000", "pointer"),
        ("1002", "pointer"),
    ]
    assert is_not_found(
        v.answer(
            DirectoryRequest(
                section="directory", key_value="d", tag_name="domain", key_name="name", group="none"
            )
        )
    )


def test_network_list_has_the_users_with_cidr() -> None:
    v = view({"gw": raw(attribute={"cidr": "192.0.2.0/24"}), "1000": raw()})
    request = DirectoryRequest(
        section="directory",
        tag_name="domain",
        key_name="name",
        key_value="d",
        purpose="network-list",
    )
    users = ET.fromstring(v.answer(request)).findall(".//user")
    assert [(u.get("id"), u.get("cidr")) for u in users] == [("gw", "192.0.2.0/24")]
    gateways = DirectoryRequest(section="directory", purpose="gateways")
    assert v.answer(gateways) is render.NOT_FOUND


def test_replace_extension_updates_alias_index_and_keeps_other_documents() -> None:
    v = view({"1000": raw(attribute={"number-alias": "old"}), "1001": raw(param={"p": "1"})})
    before_1001 = v.answer(user_req("1001"))
    assert parse_user(v.answer(user_req("old")))[2].get("id") == "1000"
    v.replace_extension("1000", raw(attribute={"number-alias": "new"}))
    assert is_not_found(v.answer(user_req("old")))
    assert parse_user(v.answer(user_req("NEW")))[2].get("id") == "1000"
    assert v.answer(user_req("1001")) is before_1001  # still the memoized document
    v.replace_extension("1000", None)
    assert is_not_found(v.answer(user_req("1000")))
    assert is_not_found(v.answer(user_req("new")))


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def invalidate_domain(self, domain: str) -> None:
        self.calls.append(("domain", domain))

    def invalidate_shared(self) -> None:
        self.calls.append(("shared",))

    def refresh_extension(self, domain: str, user_id: str) -> None:
        self.calls.append(("refresh", domain, user_id))


KS = "__keyspace@0__:"


def test_router_bracketed_write_is_precise_and_stray_writes_are_coarse() -> None:
    recorder = Recorder()
    router = NotificationRouter(recorder)
    change = '{"kind":"extension","op":"update","domain":"d","extension":"1000"}'
    router.handle("cti:directory:write-begin", b"d")
    router.handle(KS + "cti_exten@d", b"hset")
    router.handle("cti:directory:changes", change.encode())
    router.handle(KS + "cti_exten@e", b"hset")  # by hand
    router.handle(KS + "cti_template", b"hset")
    router.handle(KS + "cti_unrelated", b"set")
    router.handle("cti:directory:changes", change.encode())  # no bracket: nothing more
    assert recorder.calls == [("refresh", "d", "1000"), ("domain", "e"), ("shared",)]


def test_router_unexplained_keys_inside_a_bracket_are_coarse() -> None:
    recorder = Recorder()
    router = NotificationRouter(recorder)
    router.handle("cti:directory:write-begin", b"d")
    router.handle(KS + "cti_exten@other", b"hset")
    router.handle(KS + "cti_domain", b"hset")
    router.handle("cti:directory:changes", b"not json")
    router.handle("cti:directory:write-begin", b"d")
    router.handle(KS + "cti_exten@d", b"hdel")
    router.handle("cti:directory:write-begin", b"d")  # previous bracket never closed
    assert recorder.calls == [("domain", "other"), ("shared",), ("domain", "d")]


def test_notify_flags_are_merged_not_replaced() -> None:
    assert merged_notify_flags("") == "Kghxe"
    assert merged_notify_flags("Ex") == "ExKghe"
    assert merged_notify_flags("KEA") is None
    assert merged_notify_flags("AK") is None


def test_lookup_by_another_attribute_key() -> None:
    v = view({"1000": raw(attribute={"mailbox": "MB1"}), "1001": raw()})
    assert parse_user(v.answer(user_req("mb1", key="mailbox")))[2].get("id") == "1000"
    assert is_not_found(v.answer(user_req("1000", key="mailbox")))


def test_canary_overdue_only_when_a_write_goes_unheard() -> None:
    canary = Canary(interval=0.5, deadline=2.0)
    assert canary.due(0.0) and not canary.overdue(100.0)  # nothing written yet
    canary.wrote(0.0)
    assert not canary.due(0.4) and canary.due(0.5)
    canary.wrote(0.5)
    assert not canary.overdue(2.0) and canary.overdue(2.1)  # from the first unheard write
    canary.heard()
    assert canary.heard_since_start and not canary.overdue(10.0)
    canary.wrote(10.0)
    canary.restart_wait(11.0)
    assert not canary.overdue(12.9) and canary.overdue(13.1)
    assert canary.wait(10.2, idle=5.0) == pytest.approx(0.3)


def test_router_a_forged_deeply_nested_change_event_is_just_unreadable() -> None:
    """Anyone who may PUBLISH can send one; it escaped as RecursionError, which ended the
    subscriber with the cache disabled for good (issue 9, found beside defect 1)."""
    recorder = Recorder()
    router = NotificationRouter(recorder)
    router.handle("cti:directory:write-begin", b"d")
    router.handle(KS + "cti_exten@d", b"hset")
    router.handle("cti:directory:changes", b"[" * 100_000)
    assert recorder.calls == [("domain", "d")]
    with pytest.raises(ValueError) as caught:
        DirectoryChange.from_json('{"kind": "' + "k" * 10_000 + '"}')
    assert len(str(caught.value)) < 200
