"""What the directory store's parts share: the stored records, etags, the parse that
refuses what a lookup would refuse, and the one transaction that sends a write's brackets.

The Redis layout and the write discipline are described in :mod:`directory_service.api.store`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis
from redis.client import Pipeline

from cti import redis_keys
from cti.directory_entry import DirectoryEntry, ExtensionFormatError
from cti.redis_client import publish_in_transaction
from cti.text import redis_text
from cti.transactions import watch_transaction
from directory_service.api import errors
from directory_service.api.validation import extension_name
from directory_service.api.write_plan import Bracket
from directory_service.lookup import render
from directory_service.unusable import report_unusable

T = TypeVar("T")


Raw = bytes | str
"""A stored value as redis-py returns it (bytes: clients are made without decoding)."""


def raw_bytes(value: Raw) -> bytes:
    return value.encode() if isinstance(value, str) else value


ListPosition = tuple[str, str, str]
"""Where a listing continues: (domain, HSCAN cursor, last id returned from that batch)."""


def etag_of(raw: Raw | None) -> str:
    """A hash of the stored bytes: any change, by anyone, changes it."""
    return hashlib.blake2b(raw_bytes(raw or b""), digest_size=10).hexdigest()


@dataclass(frozen=True)
class StoredExtension:
    domain: str
    extension_id: str
    entry: DirectoryEntry
    etag: str

    @property
    def name(self) -> str:
        return extension_name(self.domain, self.extension_id)


@dataclass(frozen=True)
class StoredTemplate:
    template: str
    entry: DirectoryEntry
    etag: str
    usage_count: int = 0


@dataclass(frozen=True)
class StoredDomain:
    domain: str
    entry: DirectoryEntry
    etag: str
    extension_count: int = 0


def parse_stored(
    name: str, raw: Raw, where: tuple[str, str], user_id: str | None = None
) -> DirectoryEntry:
    """The stored entry at ``where`` (Redis key, field), or FAILED_PRECONDITION if it is
    broken (the same test as lookups: :func:`render.servable_entry`), logged once."""
    try:
        return render.servable_entry(raw, user_id)
    except ExtensionFormatError as exc:
        report_unusable(*where, str(exc))
        raise errors.stored_value_invalid(name, str(exc)) from None


def check_etag(name: str, given: str, raw: Raw | None) -> None:
    if given and given != etag_of(raw):
        raise errors.etag_mismatch(name)


class StoreBase:
    """What every part of the store shares: the client, the transaction, the domains."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    # -----------------------------------------------------------------------------------
    # Transactions

    def _transact(
        self,
        name: str,
        watch: Sequence[str],
        plan: Callable[[Pipeline], tuple[T, list[Bracket]]],
        deadline: float | None = None,
    ) -> T:
        """Run ``plan`` (reads under WATCH, raises ApiError to refuse) then send its
        brackets in one MULTI/EXEC; start over if a watched key changed meanwhile."""

        def write(pipe: Pipeline) -> T:
            result, brackets = plan(pipe)
            pipe.multi()
            for bracket in brackets:
                for command in bracket.redis_commands():
                    if command[0] == "PUBLISH":
                        publish_in_transaction(pipe, command[1], command[2], watch[0])
                    else:
                        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            pipe.execute()
            return result

        return watch_transaction(self.client, watch, write, name=name, deadline=deadline)

    def extension_domains(self) -> list[str]:
        """Every domain that has an extension hash, sorted."""
        found = {
            redis_keys.domain_of_extensions_key(redis_text(key))
            for key in self.client.scan_iter(match=redis_keys.EXTENSIONS_PREFIX + "*", count=1000)
        }
        return sorted(d for d in found if d)
