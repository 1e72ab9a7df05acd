"""Watch = one consistent snapshot of the state hashes, then the change log from exactly
that point: no gap, no duplicate.

Why it is exact: the core writes every state change as one MULTI/EXEC holding the hash
write *and* its ``XADD`` to the change log (``cti:events:log``, see
:func:`cti.redis_keys.events_log`). :meth:`ChangeLog.snapshot` reads the
hashes and the log's last id in one MULTI/EXEC too, so the snapshot contains precisely the
changes up to that id, and ``XREAD`` from it returns precisely the ones after.

The log is capped (``MAXLEN ~ 100000``); a reader that falls that far behind, or resumes
from a revision already trimmed, or finds the log reset (Redis flushed or restarted empty)
gets :class:`LogGap` instead of silently missing changes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis

from cti import redis_keys
from cti.text import display_text, redis_text
from event_service.api.messages import Kind

log = logging.getLogger(__name__)

Op = Literal["set", "update", "delete"]
ALL_KINDS: tuple[Kind, ...] = ("registration", "call")
ALL_OPS: tuple[Op, ...] = ("set", "update", "delete")
START = "0-0"
"""The revision before any change (the log did not exist yet)."""

_REVISION = re.compile(r"^\d{1,20}-\d{1,20}$")
_STREAM_ID_PART_MAX = 2**64 - 1
"""Redis stream ids are two unsigned 64-bit numbers; Redis refuses anything larger."""


class LogGap(Exception):
    """Changes after the requested revision are no longer in the log: watch afresh."""


def parse_revision(text: str) -> tuple[int, int]:
    """``1700000000000-3`` -> (1700000000000, 3); ValueError if it is not a stream id."""
    if not _REVISION.match(text):
        raise ValueError(f"{text!r} is not a revision (<milliseconds>-<sequence>)")
    ms, _, seq = text.partition("-")
    revision = int(ms), int(seq)
    if max(revision) > _STREAM_ID_PART_MAX:
        raise ValueError(f"{text!r} is not a revision (each part at most {_STREAM_ID_PART_MAX})")
    return revision


@dataclass(frozen=True)
class Change:
    """One entry of the change log."""

    revision: str
    kind: Kind
    op: Op
    key: str
    value: bytes
    node: str


def parse_change(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> Change | None:
    """The typed entry, or ``None`` (logged) for an entry not in the agreed format."""
    revision = redis_text(entry_id)
    kind = display_text(fields.get(b"kind", b""))
    op = display_text(fields.get(b"op", b""))
    key = redis_text(fields.get(b"key", b""))
    if (
        kind not in ALL_KINDS
        or op not in ALL_OPS
        or not key
        or (op, kind) == ("update", "registration")
    ):
        log.warning("skipping change-log entry not in the agreed format", extra={"id": revision})
        return None
    return Change(
        revision=revision,
        kind=kind,
        op=op,
        key=key,
        value=fields.get(b"value", b""),
        node=display_text(fields.get(b"node", b"")),
    )


@dataclass(frozen=True)
class Snapshot:
    """The hashes as they were at ``revision`` (every change up to it included)."""

    revision: str
    entries: Mapping[Kind, Mapping[str, bytes]]


# ---------------------------------------------------------------------------------------
# Redis I/O


class ChangeLog:
    """Snapshot and change reads for Watch over one Redis."""

    def __init__(self, client: redis.Redis, hashes: Mapping[Kind, str]) -> None:
        self._client = client
        self._hashes = dict(hashes)
        # The log the core writes beside these hashes (same builder, same cluster slot).
        self._stream = redis_keys.events_log(self._hashes["registration"])

    def snapshot(self, kinds: Iterable[Kind]) -> Snapshot:
        """The hashes of ``kinds`` and the log position, in one MULTI/EXEC."""
        wanted = [kind for kind in ALL_KINDS if kind in set(kinds)]
        with self._client.pipeline(transaction=True) as pipe:
            for kind in wanted:
                pipe.hgetall(self._hashes[kind])
            pipe.xinfo_stream(self._stream)
            results = pipe.execute(raise_on_error=False)
        *hashes, info = results
        for result in hashes:
            if isinstance(result, Exception):
                raise result
        entries = {
            kind: {redis_text(k): v for k, v in values.items()}
            for kind, values in zip(wanted, hashes, strict=True)
        }
        return Snapshot(revision=_last_id(info), entries=entries)

    def read(self, after: str, block_ms: int | None, count: int) -> tuple[list[Change], str]:
        """Changes after ``after`` (waiting up to ``block_ms`` for the first one), and the
        new position (past entries skipped as malformed too).

        Raises :class:`LogGap` when entries after ``after`` may have been trimmed or the
        log was reset. The check runs in the same round trip, right after the XREAD, so a
        log that still holds ``after``'s successors then held them during the read.
        """
        with self._client.pipeline(transaction=False) as pipe:
            pipe.xread({self._stream: after}, count=count, block=block_ms)
            pipe.xinfo_stream(self._stream)
            read, info = pipe.execute(raise_on_error=False)
        if isinstance(read, Exception):
            raise read
        _check_reaches(info, after)
        changes: list[Change] = []
        position = after
        for _stream, entries in read or ():
            for entry_id, fields in entries:
                position = redis_text(entry_id)
                change = parse_change(entry_id, fields)
                if change is not None:
                    changes.append(change)
        return changes, position


def _no_log(info: Any) -> bool:
    """XINFO STREAM's answer when the log does not exist (yet, or after a flush)."""
    return isinstance(info, redis.ResponseError) and "no such key" in str(info).lower()


def _info(info: Any, name: str, default: Any = None) -> Any:
    """One field of an XINFO STREAM answer. redis-py parses it into a dict with str keys,
    except inside a Redis Cluster transaction, where the keys stay bytes."""
    if name in info:
        return info[name]
    return info.get(name.encode(), default)


def _last_id(info: Any) -> str:
    if _no_log(info):  # no log yet: every change is after START
        return START
    if isinstance(info, Exception):
        raise info
    return redis_text(_info(info, "last-generated-id"))


def _check_reaches(info: Any, after: str) -> None:
    """Raise :class:`LogGap` unless every entry after ``after`` is still in the log."""
    position = parse_revision(after)
    if _no_log(info):
        if after != START:
            raise LogGap("the change log was reset (Redis flushed or restarted)")
        return
    if isinstance(info, Exception):
        raise info
    if parse_revision(redis_text(_info(info, "last-generated-id"))) < position:
        raise LogGap(f"revision {after} is newer than the change log (was it reset?)")
    length = int(_info(info, "length", 0))
    if after == START:
        added = _info(info, "entries-added")
        if added is not None and int(added) > length:
            raise LogGap("the change log no longer holds its first entries")
        return
    first = _info(info, "first-entry")
    if length and first and parse_revision(redis_text(first[0])) > position:
        raise LogGap(f"changes after revision {after} were trimmed from the change log")
    if not length and parse_revision(redis_text(_info(info, "last-generated-id"))) > position:
        raise LogGap(f"changes after revision {after} were removed from the change log")
