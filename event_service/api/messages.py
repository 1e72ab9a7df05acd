"""Stored state -> API messages, and the filters and page tokens of the read API (pure).

The hashes hold the seed's JSON shapes, written by the event service core (or by hand);
this module only reads them. A value that is not what we expect is still served with its
raw ``json`` (nothing hidden, nothing invented), the typed fields left empty.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from cti.api_errors import invalid_argument
from cti.text import display_text
from cti.v1 import events_pb2

log = logging.getLogger(__name__)

Kind = Literal["registration", "call"]
"""The ``kind`` of a change-log entry (see ``cti.redis_keys.EVENTS_LOG_STREAM``)."""

COLLECTIONS: dict[Kind, str] = {"registration": "registrations", "call": "calls"}
"""Resource-name collection per kind: ``registrations/{key}``, ``calls/{key}``."""

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


# ---------------------------------------------------------------------------------------
# Names


def resource_name(kind: Kind, key: str) -> str:
    return f"{COLLECTIONS[kind]}/{key}"


def key_from_name(kind: Kind, name: str, field_path: str = "name") -> str:
    """``registrations/1000`` -> ``1000``; INVALID_ARGUMENT for anything else."""
    prefix = COLLECTIONS[kind] + "/"
    key = name[len(prefix) :] if name.startswith(prefix) else ""
    if not key:
        raise invalid_argument(field_path, f"must look like {prefix}{{key}}, got {name!r}")
    return key


def split_key(key: str) -> tuple[str, str]:
    """``1000@example.com`` -> (``1000``, ``example.com``); a plain key has no domain."""
    extension, at, domain = key.partition("@")
    return (extension, domain) if at else (key, "")


# ---------------------------------------------------------------------------------------
# Values -> messages


def _text(value: Any) -> str:
    """A JSON value as the string FreeSWITCH would have sent (``true``, ``20``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _decode(key: str, raw: bytes | str) -> tuple[str, dict[str, Any] | None]:
    text = display_text(raw)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("stored value is not a JSON object; served raw", extra={"key": key})
        return text, None
    return text, value


def registration_message(key: str, raw: bytes | str) -> events_pb2.Registration:
    """One ``registrations`` hash entry as a :class:`Registration`."""
    text, value = _decode(key, raw)
    message = events_pb2.Registration(name=resource_name("registration", key), key=key, json=text)
    extension, domain = split_key(key)
    if value is None:
        message.extension, message.domain = extension, domain
        return message
    headers = {name: v if type(v) is str else _text(v) for name, v in value.items()}
    message.headers.update(headers)
    message.extension = headers.get("from-user") or headers.get("username") or extension
    message.domain = (
        domain
        or headers.get("domain_name")
        or headers.get("from-host")
        or headers.get("realm")
        or ""
    )
    message.contact = headers.get("contact", "")
    message.user_agent = headers.get("user-agent", "")
    message.network_ip = headers.get("network-ip", "")
    message.network_port = headers.get("network-port", "")
    message.status = headers.get("status", "")
    message.profile_name = headers.get("profile-name", "")
    message.call_id = headers.get("call-id", "")
    message.expires = _seconds(headers.get("expires", ""))
    return message


_INT64_MAX = 2**63 - 1


def _seconds(text: str) -> int:
    """A decimal count for an int64 field, else 0 (a value out of range would make
    protobuf raise, failing every List and Watch snapshot that contains it)."""
    if not (text.isascii() and text.isdigit()):
        return 0
    value = int(text)
    return value if value <= _INT64_MAX else 0


_CALL_RECORD_KEYS = frozenset({"username", "current", "notify", "activity"})


def extension_calls_message(key: str, raw: bytes | str) -> events_pb2.ExtensionCalls:
    """One ``calls`` hash entry (the seed's per-extension record) as :class:`ExtensionCalls`."""
    text, value = _decode(key, raw)
    message = events_pb2.ExtensionCalls(name=resource_name("call", key), key=key, json=text)
    if value is None:
        return message
    message.username = _text(value.get("username"))
    message.current = _text(value.get("current"))
    message.notify = _text(value.get("notify"))
    activity = value.get("activity")
    live = [_text(uuid) for uuid in activity] if isinstance(activity, list) else []
    message.activity.extend(live)
    for uuid, fields in value.items():
        if uuid in _CALL_RECORD_KEYS or not isinstance(fields, dict):
            continue
        call = message.calls.add(uuid=uuid, active=uuid in live)
        call.fields.update({name: _text(v) for name, v in fields.items()})
    return message


# ---------------------------------------------------------------------------------------
# Filters


@dataclass(frozen=True)
class StateFilter:
    """What a List or Watch asks for. Empty fields match everything."""

    domain: str = ""
    extension_prefix: str = ""
    active_only: bool = False

    def key_may_match(self, key: str) -> bool:
        """Cheap test on the key alone (before reading the value)."""
        return key.startswith(self.extension_prefix)

    def matches_registration(self, message: events_pb2.Registration) -> bool:
        return self.key_may_match(message.key) and (
            not self.domain or message.domain.lower() == self.domain.lower()
        )

    def matches_calls(self, message: events_pb2.ExtensionCalls) -> bool:
        if not self.key_may_match(message.key):
            return False
        if self.domain and split_key(message.key)[1].lower() != self.domain.lower():
            return False
        return not self.active_only or len(message.activity) > 0

    def fingerprint(self) -> str:
        """Ties a page token to the filter it was made for."""
        text = f"{self.domain.lower()}\0{self.extension_prefix}\0{int(self.active_only)}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Pagination (keys are served sorted; a token is the last key served + the filter)


def page_size(requested: int) -> int:
    if requested < 0:
        raise invalid_argument("page_size", f"must not be negative, got {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(after_key: str, state_filter: StateFilter) -> str:
    payload = json.dumps({"after": after_key, "filter": state_filter.fingerprint()})
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str, state_filter: StateFilter) -> str:
    """The key the previous page ended with (``""`` for the first page)."""
    if not token:
        return ""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, fingerprint = payload["after"], payload["filter"]
    except (ValueError, binascii.Error, KeyError, TypeError):
        raise invalid_argument("page_token", "not a token this API issued") from None
    if not isinstance(after, str) or fingerprint != state_filter.fingerprint():
        raise invalid_argument("page_token", "was issued for different filters") from None
    return after
