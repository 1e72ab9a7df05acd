"""Reads of the state hashes for Get and List (Redis I/O only; conversion lives in
:mod:`event_service.api.messages`).

Pages are cut from the sorted key set, so a page token is simply the last key served:
no duplicates and no skipped entries across pages even while the hash changes (an entry
added behind the cursor is seen by a later List or by Watch). ``HKEYS`` costs O(keys) per
page; a hash of 100,000 registrations is ~1 MB of keys, which Redis returns in
milliseconds, and values are fetched only for the keys of the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis

from cti.text import redis_text

T = TypeVar("T")

_FETCH_CHUNK_MIN = 64


class StateReader:
    """Get/List over one Redis hash of the seed layout (``registrations`` or ``calls``)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def get(self, hash_name: str, key: str) -> bytes | None:
        value = self._client.hget(hash_name, key)
        return _as_bytes(value) if value is not None else None

    def page(
        self,
        hash_name: str,
        after: str,
        size: int,
        key_ok: Callable[[str], bool],
        convert: Callable[[str, bytes], T | None],
    ) -> tuple[list[T], str, bool]:
        """Up to ``size`` converted entries with keys sorted after ``after``.

        ``key_ok`` filters on the key alone; ``convert`` returns ``None`` for entries the
        filter rejects. Returns (entries, last key served, whether more entries match).
        """
        keys = sorted(
            key
            for key in (redis_text(raw) for raw in self._keys(hash_name))
            if key > after and key_ok(key)
        )
        found: list[T] = []
        last = after
        chunk = max(size + 1, _FETCH_CHUNK_MIN)
        for start in range(0, len(keys), chunk):
            batch = keys[start : start + chunk]
            values = self._client.hmget(hash_name, [_raw(k) for k in batch])
            for key, value in zip(batch, values, strict=True):
                if value is None:  # deleted since HKEYS
                    continue
                item = convert(key, _as_bytes(value))
                if item is None:
                    continue
                if len(found) == size:
                    return found, last, True
                found.append(item)
                last = key
        return found, last, False

    def _keys(self, hash_name: str) -> list[bytes]:
        return [_as_bytes(key) for key in self._client.hkeys(hash_name)]


def _raw(key: str) -> bytes:
    return key.encode("utf-8", errors="surrogateescape")


def _as_bytes(value: bytes | str) -> bytes:
    """Our clients never decode responses; this keeps the type checker honest."""
    return value if isinstance(value, bytes) else value.encode()
