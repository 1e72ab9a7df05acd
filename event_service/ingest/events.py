"""FreeSWITCH event headers -> typed events (pure).

An event arrives as its headers, values already URL-decoded (``parse_plain`` decodes a
``text/event-plain`` body; python-ESL hands us JSON with decoded values). Only the events the
state needs become typed; everything else is ``None`` and ignored.

Which extension a channel belongs to follows ``freeswitch.md``: the A-leg (inbound, from
the phone) by its authenticated user, the B-leg (outbound, to the phone via ``user/``) by
the dialed user. Caller-ID numbers are never used as a key: the dialplan can rewrite them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from event_service.api.control_commands import ORIGINATE_MARK

Headers = Mapping[str, str]

REGISTRATION_SUBCLASSES = ("sofia::register", "sofia::unregister", "sofia::expire")
CHANNEL_EVENTS = ("CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE")
UPDATE_EVENTS = ("CHANNEL_BRIDGE", "CALL_UPDATE")
"""Events after which a leg's caller profile (destination, callee) may have changed: a
bridge (also the new bridge after a transfer) and a callee update (re-INVITE, transfer)."""
TRANSFER_SUBCLASSES = ("sofia::transferor", "sofia::transferee")
"""SIP (REFER) transfers; the leg's fields are refreshed as after :data:`UPDATE_EVENTS`."""
SUBSCRIPTION = " ".join(
    (
        *CHANNEL_EVENTS,
        *UPDATE_EVENTS,
        "BACKGROUND_JOB",  # results of call-control commands (event_service.api.control)
        "HEARTBEAT",
        "CUSTOM",
        *REGISTRATION_SUBCLASSES,
        *TRANSFER_SUBCLASSES,
    )
)
"""``event plain <this>``: plain events first, ``CUSTOM <subclasses>`` last (every word after
``CUSTOM`` is read as a subclass, so a plain event named after it is never delivered)."""

RegistrationAction = Literal["register", "unregister", "expire"]
ChannelAction = Literal["create", "answer", "update", "hangup"]
Notify = Literal["callin", "callout", "answer", "hangup"]


def parse_plain(body: str) -> dict[str, str]:
    """A ``text/event-plain`` body (``Name: url-encoded value`` lines) -> decoded headers.
    A header named twice keeps its last value, as FreeSWITCH's own JSON rendering does."""
    headers: dict[str, str] = {}
    for line in body.split("\n"):
        name, sep, value = line.partition(": ")
        if sep:
            headers[name] = unquote(value) if "%" in value else value
    return headers


@dataclass(frozen=True)
class Owner:
    """The extension an event is about: user and domain (SIP host/realm)."""

    user: str
    domain: str

    def key(self, with_domain: bool) -> str:
        """The hash field: ``<ext>`` as in the seed, or ``<ext>@<domain>`` (multi-tenant)."""
        return f"{self.user}@{self.domain}" if with_domain and self.domain else self.user


@dataclass(frozen=True)
class RegistrationEvent:
    action: RegistrationAction
    owner: Owner
    profile: str
    contact: str
    call_id: str
    timestamp: int
    headers: Headers


@dataclass(frozen=True)
class ChannelEvent:
    action: ChannelAction
    uuid: str
    inbound: bool
    owner: Owner | None
    answered: bool
    headers: Headers
    originated: bool = False
    """Placed by the call-control API (``Originate``): the extension's leg rings it, but
    the extension is the one calling, so it is a ``callout`` like an inbound leg."""

    @property
    def notify(self) -> Notify:
        if self.action == "hangup":
            return "hangup"
        if self.action == "answer" or self.answered:
            return "answer"
        return "callout" if self.inbound or self.originated else "callin"


@dataclass(frozen=True)
class Heartbeat:
    core_uuid: str


Event = RegistrationEvent | ChannelEvent | Heartbeat

_CHANNEL_ACTIONS: dict[str, ChannelAction] = {
    "CHANNEL_CREATE": "create",
    "CHANNEL_ANSWER": "answer",
    "CHANNEL_HANGUP_COMPLETE": "hangup",
    "CHANNEL_BRIDGE": "update",
    "CALL_UPDATE": "update",
    # What ``uuid_dump`` answers (reconcile): a live channel's current state.
    "CHANNEL_DATA": "create",
}


def classify(headers: Headers) -> Event | None:
    """The typed event, or ``None`` for events the state does not use."""
    name = headers.get("Event-Name", "")
    if name == "CUSTOM":
        if headers.get("Event-Subclass", "") in TRANSFER_SUBCLASSES:
            return _channel("update", headers)
        return _registration(headers)
    action = _CHANNEL_ACTIONS.get(name)
    if action is not None:
        return _channel(action, headers)
    if name == "HEARTBEAT":
        return Heartbeat(headers.get("Core-UUID", ""))
    return None


def _registration(headers: Headers) -> RegistrationEvent | None:
    subclass = headers.get("Event-Subclass", "")
    if subclass not in REGISTRATION_SUBCLASSES:
        return None
    # sofia::register/unregister name the AOR "from-user@from-host"; sofia::expire names the
    # same row "user@host" (sofia_reg.c): both are sip_user/sip_host of sofia's table.
    user = headers.get("from-user") or headers.get("user") or headers.get("username") or ""
    host = headers.get("from-host") or headers.get("host") or headers.get("realm") or ""
    if not user:
        return None
    timestamp = headers.get("Event-Date-Timestamp", "0")
    return RegistrationEvent(
        action=subclass.removeprefix("sofia::"),  # type: ignore[arg-type]
        owner=Owner(user, host),
        profile=headers.get("profile-name", ""),
        contact=headers.get("contact", ""),
        call_id=headers.get("call-id", ""),
        timestamp=int(timestamp) if timestamp.isdigit() else 0,
        headers=headers,
    )


def _channel(action: ChannelAction, headers: Headers) -> ChannelEvent | None:
    uuid = headers.get("Unique-ID", "")
    if not uuid:
        return None
    inbound = headers.get("Call-Direction", headers.get("Caller-Direction", "")) == "inbound"
    answered = headers.get("Answer-State") == "answered" or headers.get("Channel-Call-State") in (
        "ACTIVE",
        "HELD",
    )
    return ChannelEvent(
        action=action,
        uuid=uuid,
        inbound=inbound,
        owner=channel_owner(headers, inbound),
        answered=answered and action != "hangup",
        headers=headers,
        originated=headers.get(f"variable_{ORIGINATE_MARK}") == "true",
    )


def channel_owner(headers: Headers, inbound: bool) -> Owner | None:
    """The extension of a leg (``freeswitch.md`` table), ``None`` for a leg that is no
    extension's (a trunk call, an unauthenticated caller)."""
    if inbound:
        user = headers.get("variable_user_name") or headers.get("variable_sip_auth_username")
        if not user and "variable_uuid" not in headers:
            # Events without channel variables: only the caller profile says who it is.
            user = headers.get("Caller-Username")
        domain = headers.get("variable_domain_name") or headers.get("variable_sip_auth_realm")
    else:
        user = headers.get("variable_dialed_user")
        domain = headers.get("variable_dialed_domain")
    if not user or not domain:
        presence_user, _, presence_domain = headers.get("Channel-Presence-ID", "").partition("@")
        user = user or (presence_user if not inbound else None)
        domain = domain or presence_domain
    return Owner(user, domain or "") if user else None
