"""A mod_xml_curl form body, reduced to the few fields a directory answer depends on.

Pure: no I/O. mod_xml_curl posts ``hostname, section, tag_name, key_name, key_value`` and
then every header of its params event (a name may appear twice; the first one wins, as in
FreeSWITCH's own ``switch_event_get_header``). Anything garbled yields a request that
:attr:`DirectoryRequest.kind` classifies as ``"invalid"``, which is answered "not found":
FreeSWITCH then refuses the lookup, it never gets a wrong user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote_plus

_MAX_FIELDS = 1000
RequestKind = Literal["user", "group", "domain", "network-list", "gateways", "invalid"]

_WANTED = frozenset(
    (
        "section",
        "tag_name",
        "key_name",
        "key_value",
        "key",
        "user",
        "domain",
        "action",
        "purpose",
        "group",
        "group_name",
        "ip",
    )
)
# The user-lookup actions named in metrics (others count as "other"); all of them, and
# any action FreeSWITCH modules add, get the same merged user document.
USER_ACTIONS = frozenset(
    (
        "sip_auth",
        "user_call",
        "message-count",
        "reverse-auth-lookup",
        "voicemail-lookup",
        "jsonrpc-authenticate",
        "",
    )
)


@dataclass(frozen=True, slots=True)
class DirectoryRequest:
    section: str = ""
    tag_name: str = ""
    key_name: str = ""
    key_value: str = ""
    key: str = ""
    user: str = ""
    domain: str = ""
    action: str = ""
    purpose: str = ""
    group: str = ""
    ip: str = ""

    domain_name: str = field(default="", init=False, repr=False, compare=False)
    """The domain FreeSWITCH searches: ``key_value`` of a ``domain/name`` lookup (what
    ``switch_xml_locate_domain`` sends), else the ``domain`` header."""
    kind: RequestKind = field(default="invalid", init=False, repr=False, compare=False)
    """What is asked, classified once when the request is made."""

    def __post_init__(self) -> None:
        by_name = self.tag_name == "domain" and self.key_name == "name" and self.key_value
        domain_name = self.key_value if by_name else self.domain
        object.__setattr__(self, "domain_name", domain_name)
        object.__setattr__(self, "kind", self._classify(domain_name))

    def _classify(self, domain_name: str) -> RequestKind:
        if self.section != "directory":
            return "invalid"
        if self.purpose == "gateways":
            return "gateways"
        if self.purpose == "network-list":
            return "network-list" if domain_name else "invalid"
        if not domain_name:
            return "invalid"
        if self.action == "group_call" or (self.group and not self.user):
            return "group" if self.group else "invalid"
        if self.user:
            # Any other action wants the user too (voicemail-lookup, jsonrpc-authenticate,
            # ...): FreeSWITCH's own XML answers them all the same way.
            return "user"
        if self.action or self.key:
            return "invalid"  # a user lookup without a user
        return "domain"

    @property
    def action_label(self) -> str:
        """A bounded label for metrics (never a value FreeSWITCH users control)."""
        if self.kind == "user":
            if self.action in USER_ACTIONS:
                return self.action or "user_data"
            return "other"
        return self.kind


INVALID = DirectoryRequest()


def parse_request(body: bytes) -> DirectoryRequest:
    """Form body -> request; never raises (garbage becomes :data:`INVALID`).

    ``application/x-www-form-urlencoded`` is ``name=value`` pairs joined by ``&``; only the
    dozen fields we use are percent-decoded (by :func:`urllib.parse.unquote_plus`), not the
    ~40 event headers around them: ``parse_qsl`` over the whole body costs ~4x more, and
    this runs on every lookup."""
    try:
        text = body.decode("utf-8")
        fields: dict[str, str] = {}
        for pair in text.split("&", _MAX_FIELDS):
            name, _, value = pair.partition("=")
            if "%" in name or "+" in name:
                name = unquote_plus(name, errors="strict")
            if name in _WANTED and name not in fields:
                if "%" in value or "+" in value:
                    value = unquote_plus(value, errors="strict")
                fields[name] = value
    except UnicodeDecodeError:
        return INVALID
    group = fields.pop("group", "") or fields.pop("group_name", "")
    fields.pop("group_name", None)
    return DirectoryRequest(group=group, **fields)
