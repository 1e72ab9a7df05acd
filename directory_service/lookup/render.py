"""The XML documents mod_xml_curl understands, rendered from parsed entries. Pure: no I/O.

Every value goes through :func:`xml.sax.saxutils.quoteattr`, so a password holding
``<&"'>``, newlines or non-ASCII text reaches FreeSWITCH exactly as stored. What XML cannot
carry at all (control characters, unpaired surrogates, attribute names that are not XML
names) raises :class:`~cti.directory_entry.ExtensionFormatError` instead of producing a
document FreeSWITCH would misparse.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from xml.sax.saxutils import quoteattr

from cti.directory_entry import DirectoryEntry, ExtensionFormatError, parse_entry
from cti.text import excerpt

NOT_FOUND = (
    b'<document type="freeswitch/xml"><section name="result">'
    b'<result status="not found"/></section></document>'
)
DEFAULT_GROUP = "default"

# XML 1.0 forbids these code points even as character references; a lone surrogate is
# what an id or value that is not UTF-8 decodes to (surrogateescape), and UTF-8 cannot
# encode it.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_XML_NAME = re.compile(r"[A-Za-z_][-A-Za-z0-9_.]*\Z")
# Attributes that the document structure owns; a stored attribute must not replace them.
_RESERVED_ATTRIBUTES = frozenset(("id",))
CIDR_ATTRIBUTE = "cidr"


def text_problem(value: str) -> str | None:
    """Why XML cannot carry ``value`` (None: it can). The one rule for every text that
    goes into a document, stored or accepted by the API."""
    found = _NOT_XML.search(value)
    if found is None:
        return None
    if "\ud800" <= found.group() <= "\udfff":
        return "not valid UTF-8 text"
    return f"holds U+{ord(found.group()):04X}, which XML cannot carry"


def is_xml_name(name: str) -> bool:
    """An attribute name this renderer writes (a subset of XML names)."""
    return _XML_NAME.match(name) is not None


def cidr_problem(value: str) -> str | None:
    """Why ``value`` is not a ``cidr`` attribute FreeSWITCH's network lists take:
    comma-separated networks, each ``address/prefix`` (None: it is)."""
    for item in (part.strip() for part in value.split(",")):
        try:
            if "/" not in item:
                raise ValueError
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{excerpt(item)} is not a CIDR network (address/prefix)"
    return None


def _attr(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ExtensionFormatError(f"a value {problem}")
    return quoteattr(value)


def _name_value_list(container: str, tag: str, values: Mapping[str, str]) -> str:
    if not values:
        return ""
    items = "".join(
        f"<{tag} name={_attr(name)} value={_attr(value)}/>" for name, value in values.items()
    )
    return f"<{container}>{items}</{container}>"


def _user_attributes(attributes: Mapping[str, str]) -> str:
    parts = []
    for name, value in attributes.items():
        if name in _RESERVED_ATTRIBUTES:
            continue
        if not _XML_NAME.match(name):
            raise ExtensionFormatError(f"attribute name {excerpt(name)} is not an XML name")
        parts.append(f" {name}={_attr(value)}")
    return "".join(parts)


def _document(domain: str, settings: DirectoryEntry, inner: str) -> bytes:
    text = (
        '<document type="freeswitch/xml"><section name="directory">'
        f"<domain name={_attr(domain)}>"
        f"{_name_value_list('params', 'param', settings.params)}"
        f"{_name_value_list('variables', 'variable', settings.variables)}"
        f"{inner}</domain></section></document>"
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ExtensionFormatError("a value is not valid Unicode text") from None


def _groups(group: str, users: str) -> str:
    return f"<groups><group name={_attr(group)}><users>{users}</users></group></groups>"


def check_entry(entry: DirectoryEntry) -> None:
    """Raise :class:`ExtensionFormatError` unless every name and value of ``entry`` can be
    rendered (a template or domain settings: no id of its own)."""
    _name_value_list("params", "param", entry.params)
    _name_value_list("variables", "variable", entry.variables)
    _user_attributes(entry.attributes)


def check_user(user_id: str, entry: DirectoryEntry) -> None:
    """Raise :class:`ExtensionFormatError` unless ``user_id`` with ``entry`` renders:
    what the directory serves, what the API accepts, and what a stored entry must be."""
    user_xml(user_id, entry)


def servable_entry(raw: str | bytes, user_id: str | None = None) -> DirectoryEntry:
    """A stored document parsed and checked to render (an extension when ``user_id`` is
    given, else a template or domain settings); :class:`ExtensionFormatError` says why
    not. The one test of "broken" for lookups and the API alike."""
    entry = parse_entry(raw)
    if user_id is None:
        check_entry(entry)
    else:
        check_user(user_id, entry)
    return entry


def user_xml(user_id: str, entry: DirectoryEntry) -> str:
    """One ``<user>`` element with its attributes, params and variables."""
    return (
        f"<user id={_attr(user_id)}{_user_attributes(entry.attributes)}>"
        f"{_name_value_list('params', 'param', entry.params)}"
        f"{_name_value_list('variables', 'variable', entry.variables)}</user>"
    )


def user_document(
    domain: str, settings: DirectoryEntry, user_id: str, entry: DirectoryEntry
) -> bytes:
    """The answer to a user lookup (sip_auth, user_call, user_data, ...): the domain's
    params/variables (FreeSWITCH fills the user's gaps from them) and the user."""
    return _document(domain, settings, _groups(DEFAULT_GROUP, user_xml(user_id, entry)))


def group_document(
    domain: str, settings: DirectoryEntry, group: str, member_ids: Iterable[str]
) -> bytes:
    """``group_call``: members as pointers; FreeSWITCH looks each one up by id."""
    users = "".join(f'<user id={_attr(i)} type="pointer"/>' for i in member_ids)
    return _document(domain, settings, _groups(group, users))


def network_list_document(
    domain: str, settings: DirectoryEntry, cidrs: Iterable[tuple[str, str]]
) -> bytes:
    """``purpose=network-list``: ``(user id, cidr)`` pairs for acl.conf ``<node domain=>``."""
    users = "".join(f"<user id={_attr(i)} cidr={_attr(c)}/>" for i, c in cidrs)
    return _document(domain, settings, _groups(DEFAULT_GROUP, users))


def domain_document(domain: str, settings: DirectoryEntry) -> bytes:
    """A bare domain lookup: the domain's own params and variables."""
    return _document(domain, settings, "")
