"""FreeSWITCH's own view (api replies) vs what Redis holds for a node -> corrections (pure).

Sources, in the exact formats FreeSWITCH answers (``mod_sofia.c`` ``cmd_xml_status`` /
``show_reg_callback_xml``; ``mod_commands.c`` ``show ... as json``):

- ``sofia xmlstatus``: ``<profiles><profile><name>internal</name><type>profile</type>...``
- ``sofia xmlstatus profile <p> reg``: ``<profile>...<registrations><registration>
  <call-id>, <user>user@host</user>, <contact> (XML-escaped), <agent>, <status>,
  <host>, <network-ip>, <network-port>, <sip-auth-user> (URL-encoded), <sip-auth-realm>...``
- ``show channels as json``: ``{"row_count": N, "rows": [{"uuid", "direction", "callstate",
  "presence_id", ...}]}`` (``rows`` absent when N is 0).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from urllib.parse import unquote

from event_service.ingest import registrations
from event_service.ingest.events import ChannelEvent, Owner
from event_service.ingest.state import (
    ChannelGone,
    ChannelRef,
    DeviceSync,
    Operation,
    Rules,
    StaleCall,
    StaleRegistration,
)


class ReplyError(ValueError):
    """FreeSWITCH answered something we cannot read (e.g. ``-ERR``, ``Invalid Profile!``)."""


def profile_names(xml_text: str) -> list[str]:
    """Running sofia profiles from ``sofia xmlstatus`` (aliases and gateways skipped)."""
    root = _xml(xml_text)
    names = [
        (p.findtext("name") or "").strip()
        for p in root.iter("profile")
        if (p.findtext("type") or "").strip() == "profile"
    ]
    return list(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class SofiaRegistration:
    profile: str
    owner: Owner
    contact: str
    call_id: str
    values: Mapping[str, str]
    """Register-event-named headers we can fill from the table row."""


def registrations_of(profile: str, xml_text: str) -> list[SofiaRegistration]:
    root = _xml(xml_text)
    found = []
    for reg in root.iter("registration"):
        text = {child.tag: (child.text or "").strip() for child in reg}
        user, _, host = text.get("user", "").partition("@")
        if not user:
            continue
        values = {
            "Event-Name": "CUSTOM",
            "Event-Subclass": "sofia::register",
            "profile-name": profile,
            "from-user": user,
            "from-host": host,
            "contact": text.get("contact", ""),
            "call-id": text.get("call-id", ""),
            "status": text.get("status", ""),
            "to-user": user,
            "to-host": host,
            "network-ip": text.get("network-ip", ""),
            "network-port": text.get("network-port", ""),
            "username": unquote(text.get("sip-auth-user", "")),
            "realm": text.get("sip-auth-realm", ""),
            "user-agent": text.get("agent", ""),
        }
        found.append(
            SofiaRegistration(
                profile, Owner(user, host), values["contact"], values["call-id"], values
            )
        )
    return found


def _xml(text: str) -> ET.Element:
    try:
        return ET.fromstring(text.strip())
    except ET.ParseError as exc:
        raise ReplyError(f"not XML ({exc}): {text[:80]!r}") from None


def plan_registrations(
    known: Mapping[str, Mapping[str, registrations.Device]],
    live: Iterable[SofiaRegistration],
    rules: Rules,
    now_us: int,
) -> list[DeviceSync]:
    """Drop this node's devices FreeSWITCH no longer has; add the ones it has that we
    missed (their value built from the table row). Devices we know stay as they are,
    unless FreeSWITCH's row has another call-id: a REGISTER we missed replaced it (with
    ``multiple-registrations`` off a new phone takes over the same registration)."""
    wanted: dict[str, dict[str, registrations.Device]] = {}
    for reg in live:
        key = reg.owner.key(rules.key_with_domain)
        ident = registrations.device_id(
            rules.mode(reg.profile), rules.node, reg.profile, reg.owner, reg.contact, reg.call_id
        )
        value = dict(reg.values)
        value["Event-Date-Timestamp"] = str(now_us)
        wanted.setdefault(key, {})[ident] = registrations.Device(rules.node, now_us, value)
    syncs = []
    for key in sorted(set(known) | set(wanted)):
        have = known.get(key, {})
        should = wanted.get(key, {})
        remove = tuple(sorted(i for i in have if i not in should))
        add = {i: d for i, d in should.items() if i not in have or _replaced(have[i], d)}
        if remove or add:
            syncs.append(DeviceSync(key, remove, add))
    return syncs


def _replaced(known: registrations.Device, live: registrations.Device) -> bool:
    known_call_id = known.value.get("call-id")
    return bool(known_call_id) and known_call_id != live.value.get("call-id")


@dataclass(frozen=True)
class LiveChannel:
    uuid: str
    answered: bool


def channels_of(json_text: str) -> list[LiveChannel]:
    try:
        data = json.loads(json_text)
    except ValueError:
        raise ReplyError(f"not JSON: {json_text[:80]!r}") from None
    if not isinstance(data, dict) or "row_count" not in data:
        raise ReplyError(f"not a 'show channels as json' reply: {json_text[:80]!r}")
    rows = data.get("rows") or []
    return [
        LiveChannel(str(row["uuid"]), str(row.get("callstate", "")) in ("ACTIVE", "HELD"))
        for row in rows
        if isinstance(row, dict) and row.get("uuid")
    ]


@dataclass(frozen=True)
class ChannelPlan:
    gone: list[ChannelGone]
    to_dump: list[str]
    """uuids to read with ``uuid_dump`` (new to us, or answered while we were away)."""


def plan_channels(known: Mapping[str, ChannelRef], live: Iterable[LiveChannel]) -> ChannelPlan:
    live_by_uuid = {c.uuid: c for c in live}
    gone = [ChannelGone(u) for u in sorted(known) if u not in live_by_uuid]
    to_dump = [
        c.uuid
        for c in live_by_uuid.values()
        if c.uuid not in known or (c.answered and not known[c.uuid].answered)
    ]
    return ChannelPlan(gone, to_dump)


def untouched(operations: Iterable[Operation], uuids: Set[str], keys: Set[str]) -> list[Operation]:
    """Reconcile's corrections minus those about a channel (uuid) or a registration
    (field) a live event changed since the reconcile began: FreeSWITCH's tables were read
    before that event, so the event is the newer truth."""
    return [op for op in operations if not _overtaken(op, uuids, keys)]


def _overtaken(op: Operation, uuids: Set[str], keys: Set[str]) -> bool:
    match op:
        case DeviceSync(field=name) | StaleRegistration(field=name):
            return name in keys
        case ChannelGone(uuid=uuid) | StaleCall(uuid=uuid) | ChannelEvent(uuid=uuid):
            return uuid in uuids
    return False


def correction_counts(ops: Sequence[Operation]) -> Counter[tuple[str, str]]:
    """Pure: (kind, op) -> how many of a reconcile's corrections (for its metric)."""
    counts: Counter[tuple[str, str]] = Counter()
    for op in ops:
        match op:
            case DeviceSync(remove=remove, add=add):
                counts["registration", "delete"] += len(remove)
                counts["registration", "set"] += len(add)
            case ChannelGone():
                counts["call", "delete"] += 1
            case ChannelEvent():
                counts["call", "set"] += 1
            case StaleRegistration() | StaleCall():
                counts["stale", "delete"] += 1
    return counts
