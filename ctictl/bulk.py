"""Bulk delete: which listed extensions a selection matches (pure), and deleting them with
a few calls in flight, each conditional on the etag it was listed with (an extension
changed since is reported, not deleted). Failures no other call can avoid stop the run;
what was not attempted is reported as such. A delete cut off by the server going away
(UNAVAILABLE, CANCELLED) may or may not have happened: running the same bulk delete again
lists what is left."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cti.v1 import directory_pb2 as pb
from ctictl.client import ApiClient, ApiFailure
from ctictl.importer import FATAL

IN_FLIGHT = 16
STOP = FATAL | {"CANCELLED"}
"""Failures after which no further delete is sent (CANCELLED: the server went away)."""


@dataclass(frozen=True)
class IdRange:
    """``FIRST-LAST`` of numeric ids with the same number of digits (as ``ext batch``)."""

    first: str
    last: str

    @classmethod
    def parse(cls, text: str) -> IdRange:
        first, sep, last = text.partition("-")
        if not sep or not first.isdigit() or not last.isdigit():
            raise ValueError(f"{text!r}: expected FIRST-LAST of digits, e.g. 1000-1999")
        if len(first) != len(last) or first > last:
            raise ValueError(
                f"{text!r}: FIRST and LAST need the same number of digits and FIRST <= LAST"
            )
        return cls(first, last)

    def __contains__(self, extension_id: object) -> bool:
        return (
            isinstance(extension_id, str)
            and extension_id.isdigit()
            and len(extension_id) == len(self.first)
            and self.first <= extension_id <= self.last
        )

    @property
    def prefix(self) -> str:
        """The id prefix every member shares (a server-side filter that narrows the list)."""
        shared = 0
        while shared < len(self.first) and self.first[shared] == self.last[shared]:
            shared += 1
        return self.first[:shared]


@dataclass(frozen=True)
class Selection:
    """What to delete: ids of ``id_range`` and starting with ``prefix`` (both optional);
    the template and domain filters are the server's."""

    id_range: IdRange | None = None
    prefix: str = ""

    def server_prefix(self) -> str:
        """The longest id prefix the server can filter by."""
        candidates = [self.prefix, self.id_range.prefix if self.id_range else ""]
        longest = max(candidates, key=len)
        return longest if all(longest.startswith(c) for c in candidates) else self.prefix

    def matches(self, extension: Any) -> bool:
        extension_id = extension.name.rsplit("/", 1)[-1]
        if not extension_id.startswith(self.prefix):
            return False
        return self.id_range is None or extension_id in self.id_range


@dataclass
class DeleteResult:
    deleted: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    """Already deleted by someone else between listing and deleting."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(name, why) for each extension that was not deleted."""
    not_attempted: list[str] = field(default_factory=list)
    """Left alone after a failure no call could avoid (server gone, token refused)."""


def delete_extensions(
    client: ApiClient,
    extensions: Sequence[Any],
    advance: Callable[[int], None] = lambda n: None,
) -> DeleteResult:
    result = DeleteResult()
    pending: deque[tuple[str, Callable[[], Any]]] = deque()
    queue = deque(extensions)
    stopped = False

    def settle() -> None:
        nonlocal stopped
        name, wait = pending.popleft()
        try:
            wait()
            result.deleted.append(name)
        except ApiFailure as failure:
            if failure.code == "NOT_FOUND":
                result.gone.append(name)
            else:
                result.failed.append((name, failure.describe()))
                stopped = stopped or failure.code in STOP
        advance(1)

    while queue and not stopped:
        extension = queue.popleft()
        request = pb.DeleteExtensionRequest(name=extension.name, etag=extension.etag)
        pending.append((extension.name, client.start("DeleteExtension", request)))
        if len(pending) >= IN_FLIGHT:
            settle()
    while pending:
        settle()
    result.not_attempted = [e.name for e in queue]
    return result
