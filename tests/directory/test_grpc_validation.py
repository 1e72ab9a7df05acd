"""Pure checks: names, values and the Redis commands a write sends (no sockets)."""

from __future__ import annotations

import json

import grpc
import pytest

from cti import redis_keys
from cti.api_errors import ApiError
from cti.changes import DirectoryChange
from cti.directory_entry import DirectoryEntry
from directory_service.api import messages, validation
from directory_service.api.passwords import a1_hash, generate_password, secret_params
from directory_service.api.write_plan import ExtensionWrite, extension_brackets, settings_bracket


def violation(call: object) -> str:
    with pytest.raises(ApiError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    (only,) = caught.value.violations
    return only.field


@pytest.mark.parametrize("good", ["1000", "alice", "a.b_c+d-1", "0"])
def test_extension_ids_accepted(good: str) -> None:
    assert validation.check_extension_id(good, "f") == good


@pytest.mark.parametrize("bad", ["", "Alice", "-1", "a b", "x" * 65, "1000@dom", "é"])
def test_extension_ids_refused(bad: str) -> None:
    assert violation(lambda: validation.check_extension_id(bad, "extension_id")) == "extension_id"


@pytest.mark.parametrize("good", ["example.com", "192.168.31.57", "a-b.c", "localhost", "::1"])
def test_domains_accepted(good: str) -> None:
    assert validation.check_domain(good, "f") == good


@pytest.mark.parametrize("bad", ["", "-a.com", "a..b", "a_b.com", "a" * 64 + ".com", "x/y"])
def test_domains_refused(bad: str) -> None:
    assert violation(lambda: validation.check_domain(bad, "parent")) == "parent"


def test_resource_names() -> None:
    assert validation.parse_extension_name("domains/ex.com/extensions/1001", "n") == (
        "ex.com",
        "1001",
    )
    assert validation.parse_template_name("templates/agents", "t") == "agents"
    assert validation.parse_template_name("agents", "t", allow_bare=True) == "agents"
    assert validation.parse_domain_name("domains/-", "p", allow_all=True) == "-"
    # An existing (hand-written) id need not follow the rules for new ids.
    assert validation.parse_extension_name("domains/ex.com/extensions/Alice", "n")[1] == "Alice"
    for bad in (
        "ex.com/1001",
        "domains/ex.com/users/1",
        "domains/ex.com/extensions/1/x",
        "domains/ex.com/extensions/a b",
        "domains/ex.com/extensions/",
    ):
        assert violation(lambda bad=bad: validation.parse_extension_name(bad, "name")) == "name"
    assert violation(lambda: validation.parse_template_name("agents", "name")) == "name"
    assert violation(lambda: validation.parse_domain_name("domains/-", "parent")) == "parent"


def entry(**sections: dict[str, str]) -> DirectoryEntry:
    return DirectoryEntry(
        params=sections.get("params", {}),
        variables=sections.get("variables", {}),
        attributes=sections.get("attributes", {}),
    )


@pytest.mark.parametrize(
    "acl", ["", "10.0.0.0/8", "192.168.0.100/32, lan", "domains", "2001:db8::/32,10.1.2.3/24"]
)
def test_auth_acl_accepted(acl: str) -> None:
    validation.check_extension(entry(params={"auth-acl": acl}), "extension")


@pytest.mark.parametrize("acl", ["192.168.0.100/255", "10.0.0.1", "10.0.0.0/8,bad name", "1.2.3/x"])
def test_auth_acl_refused(acl: str) -> None:
    field = violation(lambda: validation.check_extension(entry(params={"auth-acl": acl}), "x"))
    assert field == "x.params.auth-acl"


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("params", "user-agent-filter", "^(Yealink"),
        ("params", "max-registrations-per-extension", "0"),
        ("params", "max-registrations-per-extension", "two"),
        ("params", "max-registrations-per-extension", "-1"),
        ("attributes", "cacheable", "false"),
        ("attributes", "cacheable", "10s"),
        ("attributes", "number-alias", "has space"),
        ("params", "a1-hash", "not-md5"),
        ("variables", "bad key", "v"),
    ],
)
def test_values_refused(section: str, key: str, value: str) -> None:
    field = violation(lambda: validation.check_extension(entry(**{section: {key: value}}), "e"))
    assert field == f"e.{section}.{key}"


def test_values_accepted() -> None:
    validation.check_extension(
        entry(
            params={
                "user-agent-filter": "^(Yealink|Grandstream).*",
                "max-registrations-per-extension": "3",
                "a1-hash": a1_hash("1001", "ex.com", "pw"),
                "dial-string": "{presence_id=${dialed_user}}${sofia_contact(${dialed_user})}",
            },
            attributes={"cacheable": "10000", "number-alias": "Alice"},
        ),
        "e",
    )
    validation.check_extension(entry(attributes={"cacheable": "true"}), "e")


def test_secrets_only_through_password_field() -> None:
    field = violation(
        lambda: validation.check_extension_input(entry(params={"password": "x"}), "extension")
    )
    assert field == "extension.params.password"
    for forbidden in ({"params": {"password": "x"}}, {"attributes": {"number-alias": "a"}}):
        violation(lambda f=forbidden: validation.check_template(entry(**f), "t"))
    assert violation(lambda: validation.check_password("", "p")) == "p"


def test_range_ids() -> None:
    assert validation.range_ids("0998", "1001", "range", 10) == ["0998", "0999", "1000", "1001"]
    assert violation(lambda: validation.range_ids("10", "9", "range", 10)) == "range.last"
    assert violation(lambda: validation.range_ids("1000", "1999", "range", 10)) == "range.last"
    assert violation(lambda: validation.range_ids("a", "b", "range", 10)) == "range.first"


def test_a1_hash_and_secret_params() -> None:
    # md5("1001:example.com:secret"), as sofia computes it.
    assert a1_hash("1001", "example.com", "secret") == "09b1b83242262419c17f691983d692d0"
    assert secret_params("1001", "d", "pw", store_a1_hash=False) == {"password": "pw"}
    assert secret_params("1001", "d", "pw", store_a1_hash=True) == {
        "a1-hash": a1_hash("1001", "d", "pw")
    }
    assert len({generate_password() for _ in range(20)}) == 20


def test_apply_mask_whole_section_keeps_hidden_secrets() -> None:
    old = DirectoryEntry(params={"password": "pw", "vm-password": "1"}, variables={"a": "1"})
    new = DirectoryEntry(params={"dial-string": "x"})
    result = messages.apply_mask(old, new, ["params"], keep_params=("password",))
    assert result.params == {"password": "pw", "dial-string": "x"}
    assert result.variables == {"a": "1"}


def test_apply_mask_single_keys_set_and_remove() -> None:
    old = DirectoryEntry(variables={"a": "1", "b": "2"}, attributes={"cacheable": "5"})
    new = DirectoryEntry(variables={"a": "9"})
    result = messages.apply_mask(old, new, ["variables.a", "variables.b", "attributes.x"])
    assert result.variables == {"a": "9"}
    assert result.attributes == {"cacheable": "5"}


def test_page_tokens_are_bound_to_their_query() -> None:
    token = messages.encode_token({"parent": "domains/a"}, ["a", "1001"])
    assert messages.decode_token(token, {"parent": "domains/a"}, 2) == ["a", "1001"]
    for bad_query, bad_token in (({"parent": "domains/b"}, token), ({"parent": "domains/a"}, "xx")):
        field = violation(lambda q=bad_query, t=bad_token: messages.decode_token(t, q, 2))
        assert field == "page_token"
    assert messages.page_size(0) == messages.DEFAULT_PAGE_SIZE
    assert messages.page_size(10**6) == messages.MAX_PAGE_SIZE


def test_update_bracket_moves_alias_and_template_count() -> None:
    old = DirectoryEntry(attributes={"number-alias": "Al"}, template="t1")
    new = DirectoryEntry(attributes={"number-alias": "bob"}, template="t2")
    (bracket,) = extension_brackets(
        "d", [ExtensionWrite("1001", old, new)], {"t1": 1, "t2": 4}, {"al": "1001", "bob": None}
    )
    commands = bracket.redis_commands()
    assert commands[0] == ("PUBLISH", redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, "d")
    assert ("HSET", "cti_exten@d", "1001", new.to_json()) in commands
    assert ("HDEL", redis_keys.aliases("d"), "al") in commands
    assert ("HSET", redis_keys.aliases("d"), "bob", "1001") in commands
    assert ("HDEL", redis_keys.template_refs("d"), "t1") in commands
    assert ("HSET", redis_keys.template_refs("d"), "t2", "5") in commands
    channel, payload = commands[-1][1:]
    assert channel == redis_keys.DIRECTORY_CHANGES_CHANNEL
    assert DirectoryChange.from_json(payload) == DirectoryChange(
        kind="extension", op="update", domain="d", extension="1001", alias="bob", old_alias="Al"
    )


def test_alias_index_entry_of_someone_else_is_left_alone() -> None:
    old = DirectoryEntry(attributes={"number-alias": "al"})
    (bracket,) = extension_brackets("d", [ExtensionWrite("1001", old, None)], {}, {"al": "1002"})
    assert ("HDEL", "cti_exten@d", "1001") in bracket.commands
    assert not [c for c in bracket.commands if c[1] == redis_keys.aliases("d")]
    change = json.loads(bracket.redis_commands()[-1][2])
    assert (change["op"], change["alias"]) == ("delete", "al")


def test_batch_has_one_bracket_and_one_event_per_extension() -> None:
    writes = [ExtensionWrite(str(n), None, DirectoryEntry(template="t")) for n in range(3)]
    brackets = extension_brackets("d", writes, {"t": 0}, {})
    assert [len(b.changes) for b in brackets] == [1, 1, 1]
    assert ("HSET", redis_keys.template_refs("d"), "t", "3") in brackets[-1].commands


def test_settings_brackets() -> None:
    bracket = settings_bracket("template", "delete", redis_keys.TEMPLATES, "t", None)
    assert bracket.commands == [("HDEL", redis_keys.TEMPLATES, "t")]
    assert bracket.changes == [DirectoryChange(kind="template", op="delete", template="t")]
    bracket = settings_bracket("domain", "create", redis_keys.DOMAINS, "d", DirectoryEntry())
    assert bracket.domain == "d" and bracket.changes[0].domain == "d"
