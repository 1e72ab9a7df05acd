"""The event service's gRPC API (``cti.v1.EventService``): read-only Get/List of the
registration and call hashes, and Watch (snapshot + ordered changes).

Thin servicer: requests are validated and converted by :mod:`event_service.api.messages`,
Redis is read by :mod:`event_service.api.store` and :mod:`event_service.api.change_log`. Auth,
health, reflection, TLS and error mapping come from :mod:`cti.grpc_server`.

Each Watch holds one server thread (the server is the sync ``grpc.server``), so the pool
is sized for :data:`MAX_WATCHES` streams plus room for unary calls; a watch beyond the
limit is refused with RESOURCE_EXHAUSTED rather than starving Get/List. Streams block on
Redis for at most :data:`WATCH_BLOCK_MS` at a time, so a cancelled call, an expired
deadline or a server shutdown ends them within about a second; on shutdown they end with
UNAVAILABLE (reason ``SHUTTING_DOWN``) so clients reconnect with their ``resume_token``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Protocol, TypeVar

import grpc
import redis

from cti.api_errors import ApiError, invalid_argument
from cti.config import TokenScope
from cti.grpc_server import (
    TokenTable,
    caller_scope,
    check_domain,
)
from cti.v1 import events_pb2, events_pb2_grpc
from event_service import metrics
from event_service.api import errors
from event_service.api.change_log import ALL_KINDS, Change, ChangeLog, LogGap, parse_revision
from event_service.api.messages import (
    Kind,
    StateFilter,
    decode_page_token,
    encode_page_token,
    extension_calls_message,
    key_from_name,
    page_size,
    registration_message,
    split_key,
)
from event_service.api.store import StateReader
from event_service.api.watch import UpsertCache, WatchView, batches

log = logging.getLogger(__name__)

SERVICE_NAME = "cti.v1.EventService"
ERROR_DOMAIN = "events.cti"
MAX_WATCHES = 48
MAX_WORKERS = MAX_WATCHES + 16
WATCH_BLOCK_MS = 1000
WATCH_BATCH = 500
KEEPALIVE_OPTIONS = (
    # Ping idle connections so a client that vanished without closing its TCP connection
    # (a partition, a killed pod) is noticed and its Watch thread and slot are freed.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Let clients ping an idle Watch every 10 s or more without being disconnected.
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
)

Item = TypeVar("Item")


class PageRequest(Protocol):
    """What a List request says about its page (both List requests have it)."""

    @property
    def page_size(self) -> int: ...
    @property
    def page_token(self) -> str: ...


_WATCH_KINDS: dict[int, Kind] = {
    events_pb2.WATCH_KIND_REGISTRATIONS: "registration",
    events_pb2.WATCH_KIND_EXTENSION_CALLS: "call",
}


class EventServicer(events_pb2_grpc.EventServiceServicer):
    """``cti.v1.EventService`` over one Redis (the hashes named by ``settings.events``)."""

    def __init__(
        self, client: redis.Redis, hashes: dict[Kind, str], tokens: TokenTable | None = None
    ) -> None:
        self._hashes = hashes
        self._tokens = tokens or TokenTable((), {})
        self._reader = StateReader(client)
        self._log = ChangeLog(client, hashes)
        self._upserts = UpsertCache()
        self._watch_slots = threading.BoundedSemaphore(MAX_WATCHES)
        self._stopping = threading.Event()

    def stop_watches(self) -> None:
        """End every Watch stream (UNAVAILABLE, ``SHUTTING_DOWN``) within ~1 s."""
        self._stopping.set()

    # -- Get / List ----------------------------------------------------------------------

    # -- token scopes (a domain-limited token sees only its domains' keys) ----------------

    def _scope(self, context: grpc.ServicerContext, domain_filter: str = "") -> TokenScope:
        scope = caller_scope(context, self._tokens)
        if domain_filter:
            check_domain(scope, domain_filter.lower())
        return scope

    def _check_key(self, context: grpc.ServicerContext, key: str) -> None:
        check_domain(self._scope(context), split_key(key)[1])

    # -- Get / List ----------------------------------------------------------------------

    def GetRegistration(
        self, request: events_pb2.GetRegistrationRequest, context: grpc.ServicerContext
    ) -> events_pb2.Registration:
        key = key_from_name("registration", request.name)
        self._check_key(context, key)
        return registration_message(key, self._get("registration", key))

    def GetExtensionCalls(
        self, request: events_pb2.GetExtensionCallsRequest, context: grpc.ServicerContext
    ) -> events_pb2.ExtensionCalls:
        key = key_from_name("call", request.name)
        self._check_key(context, key)
        return extension_calls_message(key, self._get("call", key))

    def ListRegistrations(
        self, request: events_pb2.ListRegistrationsRequest, context: grpc.ServicerContext
    ) -> events_pb2.ListRegistrationsResponse:
        state_filter = StateFilter(request.domain, request.extension_prefix)
        scope = self._scope(context, request.domain)

        def convert(key: str, value: bytes) -> events_pb2.Registration | None:
            if not scope.allows_domain(split_key(key)[1]):
                return None
            message = registration_message(key, value)
            return message if state_filter.matches_registration(message) else None

        items, token = self._page("registration", request, state_filter, convert)
        return events_pb2.ListRegistrationsResponse(registrations=items, next_page_token=token)

    def ListExtensionCalls(
        self, request: events_pb2.ListExtensionCallsRequest, context: grpc.ServicerContext
    ) -> events_pb2.ListExtensionCallsResponse:
        state_filter = StateFilter(request.domain, request.extension_prefix, request.active_only)
        scope = self._scope(context, request.domain)

        def convert(key: str, value: bytes) -> events_pb2.ExtensionCalls | None:
            if not scope.allows_domain(split_key(key)[1]):
                return None
            message = extension_calls_message(key, value)
            return message if state_filter.matches_calls(message) else None

        items, token = self._page("call", request, state_filter, convert)
        return events_pb2.ListExtensionCallsResponse(extension_calls=items, next_page_token=token)

    def _get(self, kind: Kind, key: str) -> bytes:
        try:
            value = self._reader.get(self._hashes[kind], key)
        except redis.RedisError as exc:
            raise errors.unavailable(exc) from None
        if value is None:
            raise errors.not_found(kind, key)
        return value

    def _page(
        self,
        kind: Kind,
        request: PageRequest,
        state_filter: StateFilter,
        convert: Callable[[str, bytes], Item | None],
    ) -> tuple[list[Item], str]:
        size = page_size(request.page_size)
        after = decode_page_token(request.page_token, state_filter)
        try:
            items, last, more = self._reader.page(
                self._hashes[kind], after, size, state_filter.key_may_match, convert
            )
        except redis.RedisError as exc:
            raise errors.unavailable(exc) from None
        return items, encode_page_token(last, state_filter) if more else ""

    # -- Watch ---------------------------------------------------------------------------

    def Watch(
        self, request: events_pb2.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[events_pb2.WatchResponse]:
        view = WatchView(
            _watch_kinds(request.kinds),
            StateFilter(request.domain, request.extension_prefix),
            resumed=bool(request.resume_token),
            cache=self._upserts,
            call_changes=request.call_changes,
        )
        position = _resume_position(request.resume_token)
        scope = self._scope(context, request.domain)
        if not self._watch_slots.acquire(blocking=False):
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "TOO_MANY_WATCHES",
                f"this server already serves {MAX_WATCHES} Watch streams; try another replica",
            )
        try:
            responses = self._watch(view, position, context)
            yield from responses if not scope.domains else _scoped(responses, scope)
        except redis.RedisError as exc:
            raise errors.unavailable(exc) from None
        except LogGap as gap:
            metrics.WATCH_GAPS.inc()
            raise ApiError(
                grpc.StatusCode.OUT_OF_RANGE,
                "CHANGES_UNAVAILABLE",
                f"{gap}; watch again without resume_token for a fresh snapshot",
            ) from None
        finally:
            self._watch_slots.release()
        if self._stopping.is_set():
            raise ApiError(
                grpc.StatusCode.UNAVAILABLE,
                "SHUTTING_DOWN",
                "server shutting down; watch again with the last revision as resume_token",
            )

    def _watch(
        self, view: WatchView, position: str | None, context: grpc.ServicerContext
    ) -> Iterator[events_pb2.WatchResponse]:
        if position is None:
            snapshot = self._log.snapshot(view.kinds)
            yield from batches(view.snapshot(snapshot))
            position = snapshot.revision
        elif view.rebuilds_records:
            position = yield from self._rebase(view, position)
        while context.is_active() and not self._stopping.is_set():
            changes, position = self._log.read(position, _block_ms(context), WATCH_BATCH)
            events = (view.change(change) for change in changes)
            yield from batches(event for event in events if event is not None)

    def _rebase(
        self, view: WatchView, position: str
    ) -> Generator[events_pb2.WatchResponse, None, str]:
        """A resumed whole-record watcher: the changes since its token up to a fresh
        snapshot of the call hash, with whole values (:meth:`WatchView.rebase`); returns
        the snapshot's revision, where the stream goes on."""
        snapshot = self._log.snapshot(["call"])
        end = parse_revision(snapshot.revision)
        upto: list[Change] = []
        while True:  # at least once: the read checks the log still reaches the token
            changes, position = self._log.read(position, None, WATCH_BATCH)
            upto.extend(c for c in changes if parse_revision(c.revision) <= end)
            if not changes or parse_revision(position) >= end:
                break
        yield from batches(view.rebase(snapshot, upto))
        return snapshot.revision


def _scoped(
    responses: Iterator[events_pb2.WatchResponse], scope: TokenScope
) -> Iterator[events_pb2.WatchResponse]:
    """Only the events of keys in the token's domains (and the snapshot's end marker)."""
    for response in responses:
        events = [
            e for e in response.events if not e.key or scope.allows_domain(split_key(e.key)[1])
        ]
        if events:
            yield events_pb2.WatchResponse(events=events)


def _block_ms(context: grpc.ServicerContext) -> int:
    """Wait for changes at most a second, and not past the call's deadline (never 0:
    ``XREAD BLOCK 0`` would wait forever)."""
    remaining = context.time_remaining()
    if remaining is None:
        return WATCH_BLOCK_MS
    return max(1, min(WATCH_BLOCK_MS, int(remaining * 1000)))


def _watch_kinds(kinds: Iterable[int]) -> tuple[Kind, ...]:
    chosen: list[Kind] = []
    for index, value in enumerate(kinds):
        if value not in _WATCH_KINDS:
            raise invalid_argument(f"kinds[{index}]", f"unknown kind {value}")
        chosen.append(_WATCH_KINDS[value])
    return tuple(chosen) or ALL_KINDS


def _resume_position(token: str) -> str | None:
    if not token:
        return None
    try:
        parse_revision(token)
    except ValueError as exc:
        raise invalid_argument("resume_token", str(exc)) from None
    return token
