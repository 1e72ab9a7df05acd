"""Text from untrusted or stored bytes: short, safe excerpts for error messages and log
lines, and the one decoding policy for what Redis returns."""

from __future__ import annotations

EXCERPT_CHARS = 40


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of ``text``, saying how long it was: an
    error must never echo a 10,000-character input (gRPC trailers are ~8 KB)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def redis_text(value: object) -> str:
    """A name read from Redis (key, field, channel, stream id) as text, losslessly: UTF-8,
    with any undecodable byte kept as a surrogate, so the text encodes back
    (``"surrogateescape"``) to the very bytes it names. Non-bytes pass through ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value if isinstance(value, str) else str(value)


def display_text(value: bytes | str) -> str:
    """Bytes shown to a client or a log (a protobuf string, JSON): UTF-8 with undecodable
    bytes replaced, since those need valid text and never name a key again."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
