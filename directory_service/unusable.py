"""The one log line for a stored directory entry that cannot be used, throttled.

Every place that meets a broken entry (a lookup, the alias index, a group or network list,
the gRPC API) reports it here by Redis key and hash field, never by content (it may hold a
password). A broken entry is met on every lookup of its domain while the cache is dark,
and a fuzzer or a scanner may make that thousands per second: each (key, field) is logged
at most once per :data:`REPEAT_SECONDS`, and the memory of what was logged is bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cti.text import excerpt

log = logging.getLogger("directory_service")

REPEAT_SECONDS = 300.0
MAX_REMEMBERED = 10_000
NAME_CHARS = 200


class UnusableEntryLog:
    """``report(key, field, problem)`` logs one ERROR line per (key, field) per
    ``repeat_seconds``; pure but for the logger and the injectable clock."""

    def __init__(
        self,
        logger: logging.Logger = log,
        repeat_seconds: float = REPEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.repeat_seconds = repeat_seconds
        self.clock = clock
        self._logged_at: dict[tuple[str, str], float] = {}

    def report(self, key: str, field: str, problem: str) -> bool:
        """Log it unless it was logged lately; True if it was logged now."""
        now = self.clock()
        last = self._logged_at.get((key, field))
        if last is not None and now - last < self.repeat_seconds:
            return False
        if len(self._logged_at) >= MAX_REMEMBERED:
            self._logged_at.clear()  # forget (and so maybe repeat) rather than grow
        self._logged_at[(key, field)] = now
        shown_key, shown_field = excerpt(key, NAME_CHARS), excerpt(field, NAME_CHARS)
        self.logger.error(
            "unusable directory entry: key %s field %s: %s; fix or delete it "
            "(lookups answer not found for it alone)",
            shown_key,
            shown_field,
            problem[:NAME_CHARS],
            extra={"redis_key": key[:NAME_CHARS], "redis_field": field[:NAME_CHARS]},
        )
        return True


_process_log = UnusableEntryLog()


def report_unusable(key: str, field: str, problem: str) -> None:
    """This process's throttled report
    (an :data:`~directory_service.lookup.directory.ErrorSink`)."""
    _process_log.report(key, field, problem)
