"""Domain views kept between lookups, and the rules that keep them equal to Redis.

Redis drives every invalidation (see :mod:`directory_service.lookup.invalidation`); this module
only decides what an invalidation means for the state it holds:

- a generation counter per domain (and one for the shared templates/domain settings) is
  bumped on every invalidation; a load started before an invalidation may still answer the
  lookup that started it, but is never installed;
- concurrent misses of one domain share one load;
- a precise refetch (an API write of one extension) updates the view in place; lookups of
  that domain wait for the patches in flight, so none answers the value from before the
  write; several patches may run at once and each extension's latest one wins;
- while the subscriber is not live (starting, lost, or CONFIG refused) nothing is cached
  and every lookup reads Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import redis.exceptions

from directory_service.lookup import reader, render
from directory_service.lookup.directory import DomainData, DomainView, ErrorSink, SharedData
from directory_service.lookup.request import DirectoryRequest
from directory_service.lookup.single_flight import SingleFlight

log = logging.getLogger(__name__)
_SHARED = "shared"
"""The one key of the shared data's loads (templates and domain settings)."""
_NEVER_STORED = frozenset(("invalid", "gateways"))
MAX_VIEWS = 10000
"""Cached domains beyond this are not kept when they do not exist (no extension, no
settings): memory stays bounded whatever domains lookups name."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    uncached: int = 0


class DirectoryCache:
    def __init__(
        self,
        client: reader.Client,
        default_params: Mapping[str, str],
        on_error: ErrorSink,
        enabled: bool = True,
    ) -> None:
        self.client = client
        self.default_params = default_params
        self.on_error = on_error
        self.enabled = enabled
        self.live = False
        self.stats = CacheStats()
        self._views: dict[str, DomainView] = {}
        self._shared: SharedData | None = None
        self._generation: defaultdict[str, int] = defaultdict(int)  # see invalidate_domain
        self._shared_generation = 0
        self._loads: SingleFlight[str, DomainView] = SingleFlight()
        self._shared_loads: SingleFlight[str, SharedData] = SingleFlight()
        self._refetching: dict[str, set[asyncio.Task[None]]] = {}
        self._patch_sequence: dict[str, dict[str, int]] = {}

    @property
    def caching(self) -> bool:
        return self.enabled and self.live

    async def can_answer(self, timeout: float) -> bool:
        """Readiness: a live cache answers from what it holds (and learns every change);
        otherwise every lookup needs Redis, so Redis must answer a PING in time."""
        if self.caching:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self.client.ping()
        except (TimeoutError, redis.exceptions.RedisError, OSError):
            return False
        return True

    # -- lookups ---------------------------------------------------------------------

    def cached_answer(self, request: DirectoryRequest) -> bytes | None:
        """The hot path, synchronous: the document if it needs no Redis round trip."""
        if request.kind in _NEVER_STORED:
            return render.NOT_FOUND
        if not self.caching:
            return None
        domain = request.domain_name
        view = self._views.get(domain)
        if view is None or view.shared is not self._shared or domain in self._refetching:
            return None
        self.stats.hits += 1
        return view.answer(request)

    async def answer(self, request: DirectoryRequest) -> bytes:
        """The document for ``request``, from cache or Redis."""
        cached = self.cached_answer(request)
        if cached is not None:
            return cached
        domain = request.domain_name
        if not self.caching:
            self.stats.uncached += 1
            return await self._uncached_answer(request)
        pending = self._refetching.get(domain)
        if pending:
            await asyncio.shield(asyncio.gather(*pending))
        view = self._views.get(domain)
        if view is not None and view.shared is self._shared:
            self.stats.hits += 1
        else:
            self.stats.misses += 1
            view = await self._view(domain)
        return view.answer(request)

    async def _uncached_answer(self, request: DirectoryRequest) -> bytes:
        if request.kind == "user" and request.key in ("id", ""):
            found = await reader.fetch_user(self.client, request.domain_name, request.user)
            if found is not None:
                data, shared = found
                return self._new_view(data, shared).answer(request)
        shared = await reader.load_shared(self.client)
        data = await reader.load_domain(self.client, request.domain_name)
        return self._new_view(data, shared).answer(request)

    def _new_view(self, data: DomainData, shared: SharedData) -> DomainView:
        return DomainView(data, shared, self.default_params, self.on_error)

    async def _view(self, domain: str) -> DomainView:
        shared = await self._shared_data()
        view = self._views.get(domain)
        if view is not None:
            if view.shared is not shared:
                view = view.with_shared(shared)
                self._views[domain] = view
            return view
        # The generation is taken when the load starts, not when it first runs: an
        # invalidation in between must disqualify it.
        return await self._loads.run(
            domain,
            lambda: self._load(
                domain, shared, (self._generation.get(domain, 0), self._shared_generation)
            ),
        )

    async def _load(
        self, domain: str, shared: SharedData, generation: tuple[int, int]
    ) -> DomainView:
        view = self._new_view(await reader.load_domain(self.client, domain), shared)
        unchanged = generation == (self._generation.get(domain, 0), self._shared_generation)
        # Unknown domains are remembered too (scanners probe them), but only so many.
        room = view.exists or len(self._views) < MAX_VIEWS
        if self.caching and unchanged and room:
            self._views[domain] = view
        return view

    async def _shared_data(self) -> SharedData:
        if self._shared is not None:
            return self._shared
        return await self._shared_loads.run(
            _SHARED, lambda: self._load_shared(self._shared_generation)
        )

    async def _load_shared(self, generation: int) -> SharedData:
        shared = await reader.load_shared(self.client)
        if self.caching and generation == self._shared_generation:
            self._shared = shared
        return shared

    # -- invalidation (called by the subscriber, in Redis's order) -------------------

    def invalidate_domain(self, domain: str) -> None:
        """Something changed in ``domain`` that we cannot name: reload it when asked."""
        if domain in self._views or domain in self._loads or domain in self._refetching:
            # Only domains we hold or fetch get a counter: writes elsewhere cost no memory.
            self._generation[domain] += 1
        self._views.pop(domain, None)
        self._loads.forget(domain)

    def invalidate_shared(self) -> None:
        """Templates or domain settings changed: reload them; keep raw extensions."""
        self._shared_generation += 1
        self._shared = None
        self._shared_loads.forget(_SHARED)

    def refresh_extension(self, domain: str, user_id: str) -> None:
        """An API write changed exactly one extension: re-read only it.

        Several patches of one domain may be in flight at once (a writer at 100/s); each
        extension's latest patch wins, as it was started after every earlier write."""
        if domain not in self._views or domain in self._loads:
            self.invalidate_domain(domain)  # nothing to patch: reload when asked
            return
        sequences = self._patch_sequence.setdefault(domain, {})
        sequence = sequences.get(user_id, 0) + 1
        sequences[user_id] = sequence
        generation = self._generation[domain]
        task = asyncio.create_task(self._refetch(domain, user_id, generation, sequence))
        pending = self._refetching.setdefault(domain, set())
        pending.add(task)
        task.add_done_callback(lambda done: self._patched(domain, done))

    async def _refetch(self, domain: str, user_id: str, generation: int, sequence: int) -> None:
        """Patch the domain's view, whichever it is by then: while the generation is
        unchanged it is the one we started from, or a re-render of its raw data for new
        templates, never a load from before the write."""
        try:
            raw = await reader.fetch_extension(self.client, domain, user_id)
        except Exception:
            log.warning("refetch of one extension failed; domain dropped from cache")
            self.invalidate_domain(domain)
            return
        if generation != self._generation.get(domain, 0):
            return  # the whole domain was dropped meanwhile; its next load reads after us
        if sequence != self._patch_sequence.get(domain, {}).get(user_id):
            return  # a later write of this extension is being re-read: it installs
        view = self._views.get(domain)
        if view is not None:
            view.replace_extension(user_id, raw)

    def _patched(self, domain: str, task: asyncio.Task[None]) -> None:
        pending = self._refetching.get(domain)
        if pending is not None:
            pending.discard(task)
            if not pending:
                # No patch of this domain in flight: its sequence numbers are done with.
                del self._refetching[domain]
                self._patch_sequence.pop(domain, None)

    def go_live(self) -> None:
        """The subscriber is listening: from now on every change reaches us."""
        self.flush()
        self.live = True

    def go_dark(self) -> None:
        """The subscriber lost its connection: changes may be missed, cache nothing."""
        self.live = False
        self.flush()

    def flush(self) -> None:
        for domain in list(self._views):
            self.invalidate_domain(domain)
        self._loads.clear()
        self.invalidate_shared()
