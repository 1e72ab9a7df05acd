"""One reconcile of a node, run beside the live event stream.

Its own event-socket connections read FreeSWITCH's tables (``sofia xmlstatus``, ``show
channels as json``) while the node's worker keeps applying events; the channels Redis
does not know are read with ``uuid_dump`` over :data:`DUMP_CONNECTIONS` connections at
once. The result is a list of corrections the worker merges on its own thread, leaving
out whatever a live event touched since the reconcile began (that event is newer than
the tables: :func:`event_service.ingest.reconcile.untouched`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cti.config import EslNode
from event_service.ingest import reconcile
from event_service.ingest.esl import EslConnection
from event_service.ingest.events import ChannelEvent, classify, parse_plain
from event_service.ingest.state import (
    ChannelGone,
    DeviceSync,
    Operation,
    StaleCall,
    StaleRegistration,
)
from event_service.ingest.store import StateStore

DUMP_CONNECTIONS = 8
"""``uuid_dump`` round trips in flight at once (one connection each)."""
DUMPS_PER_CONNECTION = 25
"""Fewer unknown channels than this per connection are not worth another connection."""


@dataclass
class Corrections:
    syncs: list[DeviceSync] = field(default_factory=list)
    gone: list[ChannelGone] = field(default_factory=list)
    dumped: list[ChannelEvent] = field(default_factory=list)
    stale: list[StaleRegistration | StaleCall] = field(default_factory=list)
    registrations: int = 0
    channels: int = 0

    @property
    def operations(self) -> list[Operation]:
        # Entries nothing backs go last: what reconcile just added is not stale.
        return [*self.syncs, *self.gone, *self.dumped, *self.stale]


class ReconcileRun(threading.Thread):
    """Reads FreeSWITCH's tables and plans the corrections (never writes: the worker
    merges :attr:`corrections` once :attr:`done` is set, or re-raises :attr:`error`)."""

    def __init__(
        self,
        node: EslNode,
        connect: Callable[[EslNode], EslConnection],
        store: StateStore,
    ) -> None:
        super().__init__(name=f"reconcile-{node.address}", daemon=True)
        self.node = node
        self.connect = connect
        self.store = store
        self.done = threading.Event()
        self.corrections = Corrections()
        self.error: Exception | None = None
        self.discard = False
        """Set when the result is out of date before it is merged (FreeSWITCH restarted)."""

    def run(self) -> None:
        try:
            self.corrections = self._plan()
        except Exception as exc:  # handed to the worker, which handles it as its own
            self.error = exc
        finally:
            self.done.set()

    def _plan(self) -> Corrections:
        conn = self.connect(self.node)
        conn.open()
        try:
            profiles = reconcile.profile_names(conn.api("sofia", "xmlstatus"))
            live_regs = []
            for profile in profiles:
                reply = conn.api("sofia", f"xmlstatus profile {profile} reg")
                live_regs.extend(reconcile.registrations_of(profile, reply))
            live_channels = reconcile.channels_of(conn.api("show", "channels as json"))
        finally:
            conn.close()
        snapshot = self.store.snapshot()
        syncs = reconcile.plan_registrations(
            snapshot.devices, live_regs, self.store.rules, int(time.time() * 1e6)
        )
        plan = reconcile.plan_channels(snapshot.channels, live_channels)
        return Corrections(
            syncs=syncs,
            gone=plan.gone,
            dumped=dump_channels(self.node, self.connect, plan.to_dump),
            stale=[
                *(StaleRegistration(key) for key in snapshot.stale_registrations),
                *(StaleCall(key, uuid) for key, uuid in snapshot.stale_calls),
            ],
            registrations=len(live_regs),
            channels=len(live_channels),
        )


class ReconcileMerge:
    """The worker's side of reconcile: one run at a time beside the event stream (one
    asked for during a run starts when it is merged), and what live events touched since
    it began, left out of its corrections (those events are newer than its tables)."""

    def __init__(self, new_run: Callable[[], ReconcileRun]) -> None:
        self._new_run = new_run
        self.run: ReconcileRun | None = None
        self._again = False
        self._touched_uuids: set[str] = set()
        self._touched_keys: set[str] = set()

    def start(self) -> None:
        if self.run is not None:
            self._again = True
            return
        self._again = False
        self._touched_uuids, self._touched_keys = set(), set()
        self.run = self._new_run()
        self.run.start()

    def start_if_asked(self) -> None:
        """After a merge: the run asked for during the merged one."""
        if self._again:
            self.start()

    def touched_channel(self, uuid: str) -> None:
        if self.run is not None:
            self._touched_uuids.add(uuid)

    def touched_registration(self, key: str) -> None:
        if self.run is not None:
            self._touched_keys.add(key)

    def finished(self) -> tuple[Corrections, list[Operation]] | None:
        """A finished run's tables and corrections (minus what live events changed since
        it began); ``None`` while none is ready. Re-raises the run's error."""
        run = self.run
        if run is None or not run.done.is_set():
            return None
        self.run = None
        if run.error is not None:
            raise run.error
        if run.discard:
            self.start()
            return None
        found = run.corrections
        ops = reconcile.untouched(found.operations, self._touched_uuids, self._touched_keys)
        self._touched_uuids, self._touched_keys = set(), set()
        return found, ops


def dump_channels(
    node: EslNode, connect: Callable[[EslNode], EslConnection], uuids: Sequence[str]
) -> list[ChannelEvent]:
    """``uuid_dump`` of each channel (several connections at once), as channel events in
    the order asked; channels that ended meanwhile (``-ERR``) and legs that are no
    extension's are left out."""
    if not uuids:
        return []
    lanes = max(1, min(DUMP_CONNECTIONS, len(uuids) // DUMPS_PER_CONNECTION))
    chunks = [list(uuids[lane::lanes]) for lane in range(lanes)]

    def dump(chunk: list[str]) -> dict[str, ChannelEvent]:
        conn = connect(node)
        conn.open()
        found = {}
        try:
            for uuid in chunk:
                reply = conn.api("uuid_dump", uuid)
                if reply.startswith("-ERR"):
                    continue  # ended between the two commands
                event = classify(parse_plain(reply))
                if isinstance(event, ChannelEvent) and event.owner is not None:
                    found[uuid] = event
        finally:
            conn.close()
        return found

    with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="uuid-dump") as pool:
        results: dict[str, ChannelEvent] = {}
        for part in pool.map(dump, chunks):
            results.update(part)
    return [results[uuid] for uuid in uuids if uuid in results]
