"""Pure: what the directory watch (:mod:`event_service.ingest.directory_watch`) keeps of
the directory hashes and how it finds what changed: a digest per field, a re-read fed
chunk by chunk (:class:`HashScan`), the changes to publish, and when pending writes by
hand are due to be read. No I/O.

What a read publishes:

- on ``cti:directory:changes``: one :class:`~cti.changes.DirectoryChange` per changed
  extension (old and new alias), template or domain setting, so every replica's
  :class:`~event_service.ingest.flush.ChangeFlusher` flushes exactly those users on its own
  FreeSWITCH nodes. More than :data:`PRECISE_MAX` extensions of a domain at once (an
  import) is one ``domain`` change instead: one whole-cache flush, not thousands;
- on ``cti:directory:hand-writes`` (for the directory replicas,
  :mod:`directory_service.lookup.hand_writes`): ``read`` just before the first chunk of the
  re-read, on the same connection (every notification before it is covered by the read:
  see docs/scale-out.md for why a chunked read still covers it), ``reading`` every second
  while that read goes on, ``done`` with the extensions to re-read (or ``whole``), and
  ``alive`` every second.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cti import redis_keys
from cti.changes import DirectoryChange

PRECISE_MAX = 200
"""More changed extensions than this in one domain at once: one domain change."""
WINDOW_SECONDS = 0.2
"""How long hand-written keys are collected before one re-read per key."""
MAX_WAIT_SECONDS = 1.0
"""A write by hand waits at most this long for its re-read to begin."""
SPACING = 1.0
"""While writes keep coming, a re-read begins no sooner than this many times the last
one's duration after it ended (at most :data:`MAX_WAIT_SECONDS` after the write): a big
hash written without pause costs Redis and this process at most about half their time."""


@dataclass(frozen=True)
class FieldDigest:
    digest: bytes
    alias: str = ""


def digest_of(
    value: bytes | str, *, extension: bool, previous: FieldDigest | None = None
) -> FieldDigest:
    """Pure: what is kept per field (8 bytes of BLAKE2b; the alias of an extension, as
    its old alias is to be flushed when it changes). An unchanged value keeps ``previous``
    (no JSON parsed: a re-read of 100,000 extensions parses only what changed)."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    digest = hashlib.blake2b(data, digest_size=8).digest()
    if previous is not None and previous.digest == digest:
        return previous
    alias = ""
    if extension:
        try:
            document = json.loads(data)
            attributes = document.get("attribute") if isinstance(document, dict) else None
            if isinstance(attributes, dict):
                alias = str(attributes.get("number-alias") or "")
        except ValueError:
            alias = ""
    return FieldDigest(digest, alias)


def digests(
    raw: Mapping[bytes | str, bytes | str],
    *,
    extension: bool,
    previous: Mapping[str, FieldDigest] | None = None,
) -> dict[str, FieldDigest]:
    known = previous or {}
    result = {}
    for name, value in raw.items():
        field = field_name(name)
        result[field] = digest_of(value, extension=extension, previous=known.get(field))
    return result


def read_due(
    now: float, first_write: float, last_read_end: float, last_read_seconds: float
) -> bool:
    """Pure: whether writes by hand pending since ``first_write`` are to be read now."""
    waited = now - first_write
    if waited >= MAX_WAIT_SECONDS:
        return True
    return waited >= WINDOW_SECONDS and now >= last_read_end + SPACING * last_read_seconds


def chunk_digest(items: Sequence[bytes]) -> bytes:
    """Pure, at C speed: the same for two ``HSCAN`` chunks exactly when their fields and
    values are the same, in the same order (every length goes in, so no two different
    chunks run together into the same bytes)."""
    digest = hashlib.sha1(array("Q", map(len, items)).tobytes(), usedforsecurity=False)
    digest.update(b"".join(items))
    return digest.digest()


@dataclass(frozen=True)
class Chunk:
    """What the last read found at one ``HSCAN`` cursor."""

    digest: bytes
    names: tuple[str, ...]


class HashScan:
    """Pure: one re-read of a hash, fed its ``HSCAN`` replies in order.

    A chunk identical to the one the last read found at the same cursor (the hash table
    unchanged there: the usual case, one field of 100,000 written) keeps its fields'
    digests as they were; only the fields of a chunk that differs are digested one by
    one, and only they (plus the fields not seen at all: deleted) are diffed. A read that
    met a field twice (Redis was rehashing) keeps no chunks for the next one."""

    def __init__(
        self,
        key: str,
        known: Mapping[str, FieldDigest] | None,
        chunks: Mapping[int, Chunk],
        *,
        extension: bool,
        read_id: int = 0,
    ) -> None:
        self.key = key
        self.known = known
        """What was known before (``None``: nothing, the key was never read)."""
        self.extension = extension
        self.read_id = read_id
        self.fields: dict[str, FieldDigest] = dict(known or {})
        """What was known, updated chunk by chunk (fields never seen go at the end)."""
        self.chunks: dict[int, Chunk] = {}
        self.cursor = 0
        self.finished = False
        self._previous_chunks = chunks
        self._seen: set[str] = set()
        self._touched: set[str] = set()
        self._gone: set[str] = set()
        self._met_twice = False

    def feed(self, next_cursor: int, items: Sequence[bytes]) -> None:
        """One ``HSCAN`` reply (``items``: field, value, field, value...)."""
        digest = chunk_digest(items)
        before = self._previous_chunks.get(self.cursor)
        if before is not None and before.digest == digest:
            names = before.names  # their digests are what was known: nothing to do
        else:
            known = self.known or {}
            names = tuple(map(field_name, items[0::2]))
            for name, value in zip(names, items[1::2], strict=True):
                self.fields[name] = digest_of(
                    value, extension=self.extension, previous=known.get(name)
                )
            self._touched.update(names)
        had = len(self._seen)
        self._seen.update(names)
        if len(self._seen) != had + len(names):
            self._met_twice = True
        self.chunks[self.cursor] = Chunk(digest, names)
        self.cursor = next_cursor
        if next_cursor == 0:
            self._finish()

    def _finish(self) -> None:
        self.finished = True
        if len(self._seen) != len(self.fields):  # some were not met: deleted
            self._gone = self.fields.keys() - self._seen
            for name in self._gone:
                del self.fields[name]
        if self._met_twice:
            self.chunks = {}

    def extension_changes(self, domain: str) -> list[DirectoryChange] | None:
        """The extensions this read found changed (``None``: nothing was known before)."""
        if self.known is None:
            return None
        candidates = sorted(self._touched | self._gone)
        old = {n: self.known[n] for n in candidates if n in self.known}
        new = {n: self.fields[n] for n in candidates if n in self.fields}
        return extension_changes(domain, old, new)


def field_name(name: bytes | str) -> str:
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name


def extension_changes(
    domain: str, old: Mapping[str, FieldDigest], new: Mapping[str, FieldDigest]
) -> list[DirectoryChange]:
    """Pure: one change per extension created, updated or deleted."""
    changes = []
    for name, now in new.items():
        before = old.get(name)
        if before is None:
            changes.append(DirectoryChange("extension", "create", domain, name, now.alias))
        elif before.digest != now.digest:
            old_alias = before.alias if before.alias != now.alias else ""
            changes.append(
                DirectoryChange("extension", "update", domain, name, now.alias, old_alias)
            )
    for name, before in old.items():
        if name not in new:
            changes.append(DirectoryChange("extension", "delete", domain, name, before.alias))
    return changes


def shared_changes(
    key: str, old: Mapping[str, FieldDigest], new: Mapping[str, FieldDigest]
) -> list[DirectoryChange]:
    """Pure: template or domain-setting changes (each flushes every cached user)."""
    changed = [n for n in new if n not in old or old[n].digest != new[n].digest]
    changed += [n for n in old if n not in new]
    if key == redis_keys.TEMPLATES:
        return [DirectoryChange("template", "update", template=n) for n in changed]
    return [DirectoryChange("domain", "update", domain=n) for n in changed]


def changes_to_publish(
    scan: HashScan, by_api: set[str]
) -> tuple[list[DirectoryChange], dict[str, object] | None]:
    """Pure: the changes a finished read found, less the extensions API writes changed
    (published by the API already), and the ``done`` message for the directory replicas
    (``None`` for the templates and domain settings: one change flushes every user)."""
    key = scan.key
    domain = redis_keys.domain_of_extensions_key(key)
    if domain is None:
        return shared_changes(key, scan.known or {}, scan.fields)[:1], None
    changes = scan.extension_changes(domain)
    if changes is not None:
        changes = [c for c in changes if c.extension not in by_api]
    done: dict[str, object] = {"type": "done", "domain": domain, "id": scan.read_id}
    if changes is None or len(changes) > PRECISE_MAX:
        changes = [DirectoryChange("domain", "update", domain)]
        done["whole"] = True
    else:
        done["extensions"] = [c.extension for c in changes]
    return changes, done


def forget_chunks(chunks_by_key: dict[str, dict[int, Chunk]], key: str, names: set[str]) -> None:
    """The chunks holding fields whose digest changed outside a read: the next read
    digests them field by field (a chunk kept as it was would bring back the value
    it had, however the field changed since)."""
    chunks = chunks_by_key.get(key)
    if not chunks:
        return
    if len(names) > 16:
        del chunks_by_key[key]
        return
    for cursor in [c for c, chunk in chunks.items() if any(n in chunk.names for n in names)]:
        del chunks[cursor]


def read_marker(data: bytes) -> tuple[str, Any] | None:
    """Pure: the extensions key and id of a ``read`` marker on the hand-writes channel
    (``None`` for any other message)."""
    try:
        message = json.loads(data)
        if message.get("type") != "read":
            return None
        return redis_keys.extensions(str(message["domain"])), message.get("id")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
