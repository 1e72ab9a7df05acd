"""Per-extension call record transitions (pure), in the seed's shape::

    {"username": "121", "current": "<uuid>", "notify": "answer",
     "<uuid>": {<configured fields>}, "activity": ["<uuid>", ...]}

``current`` is the uuid that changed last, ``notify`` its state (``callout`` for a call the
extension places -- including a leg the call-control API's ``Originate`` rings it with --,
``callin`` for one ringing it, ``answer``, ``hangup``), ``activity`` the live calls. Field
values are the current ones: a bridge, a callee update or a transfer (``update`` events)
refreshes a live call's fields. A hung-up call leaves ``activity`` at once; its uuid
object stays while it is ``current`` (so a GUI can show the hangup and its fields) and
goes with the next change.
An extension whose last call ended keeps its record (``notify: hangup``) until its next call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from event_service.events import ChannelEvent, Headers


@dataclass(frozen=True)
class CallRecord:
    username: str
    current: str = ""
    notify: str = ""
    calls: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    activity: tuple[str, ...] = ()

    def to_json(self) -> str:
        """Key order as in the seed: username, current, notify, uuid objects, activity."""
        data: dict[str, Any] = {
            "username": self.username,
            "current": self.current,
            "notify": self.notify,
        }
        data.update(self.calls)
        data["activity"] = list(self.activity)
        return json.dumps(data, ensure_ascii=False)


_RESERVED = frozenset({"username", "current", "notify", "activity"})


def decode(raw: bytes | str | None) -> CallRecord | None:
    """A stored record; ``None`` when absent or not a record (it will be rewritten whole)."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    activity = data.get("activity")
    return CallRecord(
        username=str(data.get("username", "")),
        current=str(data.get("current", "")),
        notify=str(data.get("notify", "")),
        calls={
            k: {str(n): str(v) for n, v in fields.items()}
            for k, fields in data.items()
            if k not in _RESERVED and isinstance(fields, dict)
        },
        activity=tuple(str(u) for u in activity) if isinstance(activity, list) else (),
    )


def pick_fields(
    headers: Headers, fields: Sequence[str], previous: Mapping[str, str]
) -> dict[str, str]:
    """The configured fields' current values; one an event does not carry keeps its last."""
    return {name: headers.get(name, previous.get(name, "")) for name in fields}


def apply_event(
    record: CallRecord | None, username: str, event: ChannelEvent, fields: Sequence[str]
) -> CallRecord | None:
    """The record after one channel event; ``None`` when the event changes nothing (a
    hangup of a call the record never had)."""
    if record is None:
        record = CallRecord(username=username)
    known = event.uuid in record.activity or event.uuid in record.calls
    if event.action == "hangup" and not known:
        return None
    if event.action == "update" and event.uuid not in record.activity:
        return None  # a field update is for a live call the record has, nothing else
    calls = dict(record.calls)
    calls[event.uuid] = pick_fields(event.headers, fields, record.calls.get(event.uuid, {}))
    if (
        event.action == "update"
        and calls[event.uuid] == record.calls.get(event.uuid)
        and (event.uuid, event.notify) == (record.current, record.notify)
    ):
        return None  # changes no recorded field: no write, no Watch event
    activity = record.activity
    if event.action == "hangup":
        activity = tuple(u for u in activity if u != event.uuid)
    elif event.uuid not in activity:
        activity = (*activity, event.uuid)
    return _settle(record, event.uuid, event.notify, calls, activity)


def apply_gone(record: CallRecord | None, uuid: str) -> CallRecord | None:
    """A channel FreeSWITCH no longer has (found by reconcile, its hangup missed)."""
    if record is None or (uuid not in record.activity and uuid not in record.calls):
        return None
    activity = tuple(u for u in record.activity if u != uuid)
    calls = dict(record.calls)
    calls.setdefault(uuid, {})
    return _settle(record, uuid, "hangup", calls, activity)


def _settle(
    record: CallRecord,
    current: str,
    notify: str,
    calls: Mapping[str, Mapping[str, str]],
    activity: tuple[str, ...],
) -> CallRecord:
    kept = {u: f for u, f in calls.items() if u == current or u in activity}
    return CallRecord(
        username=record.username or "",
        current=current,
        notify=notify,
        calls=kept,
        activity=activity,
    )
