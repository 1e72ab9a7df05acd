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

Constant cost per event: a :class:`CallRecord` keeps each call as its encoded JSON
fragment (``"<uuid>": {...}``) and ``activity`` as an ordered set, so an event touches one
call (O(1) in the extension's live calls) and :meth:`CallRecord.to_json` only joins the
fragments (once per batch, by the store). :meth:`CallRecord.delta` is what one change did
(the change log carries it instead of the whole record); :func:`apply_delta` replays it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from event_service.ingest.events import ChannelEvent, Headers


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class CallRecord:
    """One extension's record, mutated in place by :func:`apply_event` / :func:`apply_gone`
    (the store hands the fold a :meth:`copy`). Encodes exactly as ``json.dumps`` of the seed
    shape would (key order: username, current, notify, uuid objects, activity)."""

    __slots__ = ("_activity", "_calls", "_loose", "current", "notify", "username")

    def __init__(
        self,
        username: str,
        current: str = "",
        notify: str = "",
        calls: Mapping[str, Mapping[str, str]] | None = None,
        activity: Iterable[str] = (),
    ) -> None:
        self.username = username
        self.current = current
        self.notify = notify
        # uuid -> (fields, encoded '"<uuid>": {...}' fragment); dict order = stored order
        self._calls: dict[str, tuple[Mapping[str, str], str]] = {
            uuid: (fields, _fragment(uuid, fields)) for uuid, fields in (calls or {}).items()
        }
        # ordered set: uuid -> its encoded JSON string
        self._activity: dict[str, str] = {uuid: _encode(uuid) for uuid in activity}
        # Objects neither current nor live (written by hand, or by an older version): the
        # next change drops them, as every change does (checked once, here).
        self._loose = not all(u == current or u in self._activity for u in self._calls)

    @property
    def calls(self) -> Mapping[str, Mapping[str, str]]:
        return {uuid: fields for uuid, (fields, _) in self._calls.items()}

    @property
    def activity(self) -> tuple[str, ...]:
        return tuple(self._activity)

    def fields_of(self, uuid: str) -> Mapping[str, str] | None:
        entry = self._calls.get(uuid)
        return None if entry is None else entry[0]

    def is_active(self, uuid: str) -> bool:
        return uuid in self._activity

    def copy(self) -> CallRecord:
        """An independent record (shallow: entries are replaced, never changed)."""
        twin = CallRecord(self.username, self.current, self.notify)
        twin._calls = dict(self._calls)
        twin._activity = dict(self._activity)
        twin._loose = self._loose
        return twin

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CallRecord) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CallRecord({self.to_json()})"

    def to_json(self) -> str:
        """The stored value: the fragments joined (no per-call encoding here)."""
        head = (
            f'{{"username": {_encode(self.username)}, "current": {_encode(self.current)}, '
            f'"notify": {_encode(self.notify)}, '
        )
        body = "".join(f"{fragment}, " for _, fragment in self._calls.values())
        return f'{head}{body}"activity": [{", ".join(self._activity.values())}]}}'

    def delta(self) -> str:
        """What the last change did, in constant size: ``current``, ``notify``, the current
        call's fields and whether it is live (``activity`` follows from it, see
        :func:`apply_delta`)."""
        return _encode(
            {
                "username": self.username,
                "current": self.current,
                "notify": self.notify,
                "call": dict(self.fields_of(self.current) or {}),
                "active": self.current in self._activity,
            }
        )

    def _change(self, uuid: str, notify: str, fields: Mapping[str, str], live: bool) -> None:
        previous = self.current
        if self._loose:
            self._calls = {u: c for u, c in self._calls.items() if u == uuid or u in self._activity}
            self._loose = False
        self._calls[uuid] = (fields, _fragment(uuid, fields))
        if live:
            self._activity.setdefault(uuid, _encode(uuid))
        else:
            self._activity.pop(uuid, None)
        if previous != uuid and previous not in self._activity:
            self._calls.pop(previous, None)  # the hung-up call shown until the next change
        self.current, self.notify = uuid, notify


def _fragment(uuid: str, fields: Mapping[str, str]) -> str:
    return f"{_encode(uuid)}: {_encode(dict(fields))}"


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
        activity=(str(u) for u in activity) if isinstance(activity, list) else (),
    )


def pick_fields(
    headers: Headers, fields: Sequence[str], previous: Mapping[str, str]
) -> dict[str, str]:
    """The configured fields' current values; one an event does not carry keeps its last."""
    return {name: headers.get(name, previous.get(name, "")) for name in fields}


def apply_event(
    record: CallRecord | None, username: str, event: ChannelEvent, fields: Sequence[str]
) -> CallRecord | None:
    """The record after one channel event (``record`` itself, changed in place, or a new
    one); ``None`` when the event changes nothing (a hangup of a call the record never
    had)."""
    if record is None:
        record = CallRecord(username=username)
    previous = record.fields_of(event.uuid)
    if event.action == "hangup" and previous is None and not record.is_active(event.uuid):
        return None
    if event.action == "update" and not record.is_active(event.uuid):
        return None  # a field update is for a live call the record has, nothing else
    picked = pick_fields(event.headers, fields, previous or {})
    if (
        event.action == "update"
        and picked == previous
        and (event.uuid, event.notify) == (record.current, record.notify)
    ):
        return None  # changes no recorded field: no write, no Watch event
    record._change(event.uuid, event.notify, picked, live=event.action != "hangup")
    return record


def apply_gone(record: CallRecord | None, uuid: str) -> CallRecord | None:
    """A channel FreeSWITCH no longer has (found by reconcile, its hangup missed)."""
    if record is None:
        return None
    previous = record.fields_of(uuid)
    if previous is None and not record.is_active(uuid):
        return None
    record._change(uuid, "hangup", previous or {}, live=False)
    return record


def apply_delta(record: CallRecord | None, delta: Mapping[str, Any]) -> CallRecord:
    """Replay one change-log delta (:meth:`CallRecord.delta`) on the record it followed:
    the result encodes exactly as the record the writer stored."""
    if record is None:
        record = CallRecord(username=str(delta.get("username", "")))
    call = delta.get("call")
    fields = {str(n): str(v) for n, v in call.items()} if isinstance(call, dict) else {}
    record._change(
        str(delta.get("current", "")),
        str(delta.get("notify", "")),
        fields,
        live=bool(delta.get("active")),
    )
    return record
