from __future__ import annotations

import json

import pytest

from cti.directory_entry import DirectoryEntry, ExtensionFormatError, parse_entry
from tests.support import SEED_DIR


def test_seed_extension_parses_with_freeswitch_strings() -> None:
    entry = parse_entry((SEED_DIR / "extension-value.json").read_bytes())
    assert entry.params == {
        "allow-empty-password": "false",
        "password": "123",
        "auth-acl": "",
        "sip-forbid-register": "false",
    }
    assert entry.variables == {"sip-force-contact": "NDLB-connectile-dysfunction-2.0"}
    assert entry.attributes == {"cacheable": "10000", "number-alias": "myphone"}
    assert entry.alias == "myphone"
    assert entry.template == ""


def test_numbers_and_booleans_become_strings() -> None:
    entry = parse_entry('{"param": {"max-registrations-per-extension": 2, "x": true}}')
    assert entry.params == {"max-registrations-per-extension": "2", "x": "true"}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"param": []}', "'param' is not an object"),
        ('{"variable": {"a": {"b": 1}}}', "variable:"),
        ('{"template": 5}', "'template' is not a string"),
    ],
)
def test_malformed_documents_are_rejected_with_reason(raw: str, problem: str) -> None:
    with pytest.raises(ExtensionFormatError, match=problem):
        parse_entry(raw)


def test_extension_values_win_over_template() -> None:
    template = DirectoryEntry(
        params={"password": "t", "vm-password": "1"},
        variables={"a": "t"},
        attributes={"cacheable": "5"},
    )
    extension = DirectoryEntry(params={"password": "own"}, template="agents")
    merged = extension.merged_over(template)
    assert merged.params == {"password": "own", "vm-password": "1"}
    assert merged.variables == {"a": "t"}
    assert merged.attributes == {"cacheable": "5"}
    assert merged.template == "agents"


def test_round_trip_keeps_unknown_top_level_keys() -> None:
    raw = '{"param": {"password": "p"}, "template": "t", "gui-note": {"color": "red"}}'
    again = parse_entry(parse_entry(raw).to_json())
    document = json.loads(again.to_json())
    assert document["gui-note"] == {"color": "red"}
    assert document["template"] == "t"
    assert document["param"] == {"password": "p"}
