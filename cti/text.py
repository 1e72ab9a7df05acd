"""Short, safe excerpts of untrusted text for error messages and log lines."""

from __future__ import annotations

EXCERPT_CHARS = 40


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of ``text``, saying how long it was: an
    error must never echo a 10,000-character input (gRPC trailers are ~8 KB)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
