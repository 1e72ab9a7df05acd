"""Fuzzing the directory's answers, pure (the code every lookup runs, no sockets): mutated
captured xml_curl bodies against a seeded domain, and stored values of every shape beside
good entries. Invariants: nothing raises, every answer is well-formed XML, no user ever
carries another's secret, and a broken entry never changes another user's answer."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from directory_service.lookup.directory import DomainData, DomainView, SharedData
from directory_service.lookup.request import DirectoryRequest, parse_request
from tests.fuzz.strategies import CASES, STORED_IDS, stored_documents, xml_curl_bodies

DOMAIN = "127.0.0.1"  # the captured bodies' domain
SECRETS = {"1000": "S3cret-1000-x", "1001": "S3cret-1001-y", "1002": "S3cret-1002-z"}
GOOD = {
    "1000": {"param": {"password": SECRETS["1000"]}, "variable": {"callgroup": "sales"}},
    "1001": {
        "param": {"password": SECRETS["1001"]},
        "attribute": {"number-alias": "AL1001", "cidr": "10.0.0.1/32"},
        "variable": {"callgroup": "sales,support"},
    },
    "1002": {"template": "t", "param": {"password": SECRETS["1002"]}},
}
TEMPLATES = {"t": json.dumps({"variable": {"callgroup": "support"}}).encode()}
SETTINGS = {DOMAIN: json.dumps({"param": {"dial-string": "{x}${sofia_contact(...)}"}}).encode()}


def seeded_view(extra: dict[str, bytes] | None = None) -> DomainView:
    extensions = {i: json.dumps(v).encode() for i, v in GOOD.items()}
    for extension_id, raw in (extra or {}).items():
        extensions.setdefault(extension_id, raw)
    return DomainView(DomainData(DOMAIN, extensions), SharedData(TEMPLATES, SETTINGS), {})


def user_request(user: str, **fields: str) -> DirectoryRequest:
    return DirectoryRequest(section="directory", domain=DOMAIN, user=user, **fields)


def check_document(document: bytes) -> ET.Element:
    """Well-formed, and every secret in it belongs to the one user it describes."""
    root = ET.fromstring(document)
    assert root.tag == "document"
    users = root.findall(".//user")
    for owner, secret in SECRETS.items():
        if secret.encode() in document:
            assert [u.get("id") for u in users] == [owner], document
    return root


def members(document: bytes) -> set[str]:
    return {u.get("id") or "" for u in ET.fromstring(document).iter("user")}


@given(xml_curl_bodies())
def test_any_mutated_body_gets_a_well_formed_answer(body: bytes) -> None:
    CASES["xml_curl body"] += 1
    request = parse_request(body)
    check_document(seeded_view().answer(request))


REFERENCE_LOOKUPS = [
    user_request("1000", action="sip_auth"),
    user_request("1001", action="sip_auth"),
    user_request("al1001", action="user_call"),
    user_request("1002"),
]


@given(st.dictionaries(STORED_IDS, stored_documents(), min_size=1, max_size=3))
def test_a_broken_entry_never_changes_another_users_answer(extra: dict[str, bytes]) -> None:
    CASES["stored value"] += 1
    # (an entry claiming AL1001 as its alias legitimately competes for it: not broken)
    taken = ("1000", "1001", "1002", "al1001")
    extra = {
        i: v for i, v in extra.items() if i.lower() not in taken and b"al1001" not in v.lower()
    }
    clean, dirty = seeded_view(), seeded_view(extra)
    for request in REFERENCE_LOOKUPS:
        assert dirty.answer(request) == clean.answer(request), request
    for extension_id in extra:
        check_document(dirty.answer(user_request(extension_id)))
    group = dirty.answer(DirectoryRequest(section="directory", domain=DOMAIN, group="sales"))
    check_document(group)
    assert {"1000", "1001"} <= members(group)
    network = dirty.answer(
        DirectoryRequest(section="directory", domain=DOMAIN, purpose="network-list")
    )
    check_document(network)
    assert "1001" in members(network)
    check_document(dirty.answer(DirectoryRequest(section="directory", domain=DOMAIN)))


@given(stored_documents(), st.sampled_from(["template", "settings"]))
def test_broken_shared_documents_never_raise_or_leak(raw: bytes, which: str) -> None:
    CASES["stored template/settings"] += 1
    extensions = {i: json.dumps(v).encode() for i, v in GOOD.items()}
    templates = {"t": raw} if which == "template" else TEMPLATES
    settings = {DOMAIN: raw} if which == "settings" else SETTINGS
    view = DomainView(DomainData(DOMAIN, extensions), SharedData(templates, settings), {})
    for request in REFERENCE_LOOKUPS:
        check_document(view.answer(request))
    if which == "template":  # the extensions without a template are unaffected
        clean = seeded_view()
        for request in REFERENCE_LOOKUPS[:3]:
            assert view.answer(request) == clean.answer(request)
