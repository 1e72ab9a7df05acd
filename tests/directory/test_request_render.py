"""Pure request parsing and XML rendering: no sockets."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cti.directory_entry import DirectoryEntry, ExtensionFormatError, freeswitch_value
from directory_service.lookup import render
from directory_service.lookup.directory import DomainData, DomainView, SharedData
from directory_service.lookup.request import INVALID, parse_request
from tests.directory.service import name_values, parse_user
from tests.support import decode_form, xml_curl_fixture, xml_curl_fixtures


@pytest.mark.parametrize(
    ("prefix", "kind", "user", "action"),
    [
        ("01", "gateways", "", ""),
        ("02", "network-list", "", ""),
        ("03", "user", "1000", "sip_auth"),
        ("07", "user", "1001", ""),
        ("08", "user", "1001", "user_call"),
    ],
)
def test_fixture_bodies_parse_to_what_they_ask(
    prefix: str, kind: str, user: str, action: str
) -> None:
    _, body = xml_curl_fixture(prefix)
    request = parse_request(body)
    assert request.kind == kind
    assert request.user == user
    assert request.action == action
    if kind != "gateways":
        assert request.domain_name == "127.0.0.1"


def test_parsed_fields_agree_with_the_reference_decoder() -> None:
    for _, body in xml_curl_fixtures():
        first: dict[str, str] = {}
        for name, value in decode_form(body):
            first.setdefault(name, value)
        request = parse_request(body)
        for name in ("section", "tag_name", "key_name", "key_value", "user", "action", "ip"):
            assert getattr(request, name) == first.get(name, "")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe garbage",
        b"section=directory&user=%FF%FE&key=id&tag_name=domain&key_name=name&key_value=d",
        b"section=configuration&key_value=d&user=1000",
        b"section=directory&tag_name=domain&key_name=name&key_value=d&action=sip_auth&key=id",
        b"section=directory&user=1000&action=sip_auth",  # no domain at all
    ],
)
def test_garbled_or_incomplete_bodies_are_invalid(body: bytes) -> None:
    assert parse_request(body).kind == "invalid"


def test_first_occurrence_of_a_repeated_field_wins() -> None:
    body = b"section=directory&key_value=d&tag_name=domain&key_name=name&user=a&user=b"
    assert parse_request(body).user == "a"


def test_any_action_with_a_user_is_a_user_lookup_with_a_bounded_label() -> None:
    base = b"section=directory&tag_name=domain&key_name=name&key_value=d&key=id&user=1000"
    voicemail = parse_request(base + b"&action=voicemail-lookup")
    assert (voicemail.kind, voicemail.action_label) == ("user", "voicemail-lookup")
    odd = parse_request(base + b"&action=%3Cscript%3E")
    assert (odd.kind, odd.action_label) == ("user", "other")


def test_group_call_and_domain_requests() -> None:
    base = "section=directory&tag_name=domain&key_name=name&key_value=d&domain=d"
    assert parse_request(f"{base}&action=group_call&group=sales".encode()).group == "sales"
    assert parse_request(f"{base}&group_name=sales".encode()).kind == "group"
    assert parse_request(base.encode()).kind == "domain"
    assert INVALID.kind == "invalid"


def test_hostile_values_are_escaped_and_round_trip() -> None:
    password = "p<&\"'>\n\t é漢🙂"
    entry = DirectoryEntry(
        params={"password": password, "a<b": "x"},
        variables={"v": "]]>"},
        attributes={"number-alias": 'a"b'},
    )
    document = render.user_document("d&<>", DirectoryEntry(), "1&2", entry)
    domain_name, _, user = parse_user(document)
    assert domain_name == "d&<>"
    assert user.get("id") == "1&2"
    assert user.get("number-alias") == 'a"b'
    assert name_values(user, "params", "param") == {"password": password, "a<b": "x"}
    assert name_values(user, "variables", "variable") == {"v": "]]>"}


@pytest.mark.parametrize(
    "entry",
    [
        DirectoryEntry(params={"password": "bell\x07"}),
        DirectoryEntry(attributes={"bad name": "x"}),
        DirectoryEntry(params={"password": "\ud800"}),
    ],
)
def test_what_xml_cannot_carry_is_a_format_error(entry: DirectoryEntry) -> None:
    with pytest.raises(ExtensionFormatError) as info:
        render.user_document("d", DirectoryEntry(), "1", entry)
    assert "bell" not in str(info.value)


def test_id_attribute_cannot_be_overridden() -> None:
    document = render.user_document(
        "d", DirectoryEntry(), "1000", DirectoryEntry(attributes={"id": "x"})
    )
    assert parse_user(document)[2].get("id") == "1000"


_XML_TEXT = st.text(
    st.characters(
        blacklist_categories=["Cs"],
        blacklist_characters="".join(map(chr, [*range(0, 9), 11, 12, *range(14, 32)]))
        + "\ufffe\uffff",
    )
)
_NAME = st.from_regex(r"[A-Za-z_][-A-Za-z0-9_.]{0,12}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    user_id=_XML_TEXT.filter(bool),
    params=st.dictionaries(_XML_TEXT, _XML_TEXT, max_size=6),
    variables=st.dictionaries(_XML_TEXT, _XML_TEXT, max_size=6),
    attributes=st.dictionaries(_NAME.filter(lambda n: n != "id"), _XML_TEXT, max_size=4),
    domain_params=st.dictionaries(_XML_TEXT, _XML_TEXT, max_size=3),
)
def test_random_configs_render_well_formed_xml_that_round_trips(
    user_id: str,
    params: dict[str, str],
    variables: dict[str, str],
    attributes: dict[str, str],
    domain_params: dict[str, str],
) -> None:
    entry = DirectoryEntry(params=params, variables=variables, attributes=attributes)
    document = render.user_document("dom", DirectoryEntry(params=domain_params), user_id, entry)
    ET.fromstring(document)  # well-formed
    _, domain, user = parse_user(document)
    assert user.get("id") == user_id
    assert {k: v for k, v in user.attrib.items() if k != "id"} == attributes
    assert name_values(user, "params", "param") == params
    assert name_values(user, "variables", "variable") == variables
    assert name_values(domain, "params", "param") == domain_params


_SCALAR = st.one_of(
    _XML_TEXT, st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False)
)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(_XML_TEXT, _SCALAR, max_size=5),
    variables=st.dictionaries(_XML_TEXT, _SCALAR, max_size=5),
    alias=_XML_TEXT,
)
def test_stored_json_of_any_scalar_types_round_trips_as_freeswitch_strings(
    params: dict[str, object], variables: dict[str, object], alias: str
) -> None:
    stored = json.dumps(
        {"param": params, "variable": variables, "attribute": {"number-alias": alias}}
    )
    view = DomainView(DomainData("d", {"1000": stored.encode()}), SharedData(), {})
    _, _, user = parse_user(view.user_answer("1000"))
    assert name_values(user, "params", "param") == {
        k: freeswitch_value(v) for k, v in params.items()
    }
    assert name_values(user, "variables", "variable") == {
        k: freeswitch_value(v) for k, v in variables.items()
    }
    assert user.get("number-alias") == alias
