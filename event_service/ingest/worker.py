"""One thread per FreeSWITCH node: lease -> connect -> subscribe -> read loop.

The loop reads what the socket has (a batch when events queue up), folds it and writes it
in one transaction, sends queued ``api`` commands (cache flushes), and watches for
silence (FreeSWITCH sends HEARTBEAT every 20 s) and for a new ``Core-UUID`` (a FreeSWITCH
restart: reconcile). The lease is renewed by its own thread (:class:`LeaseKeeper`).
Reconcile (on connect, periodically, after a restart) runs beside the loop on its own
connections (:class:`ReconcileRun`); the loop keeps applying events and merges its
corrections when they are ready. Any connection problem -> close, back off, retry; the
"cannot reach" warning is logged once per outage, not once per attempt.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import redis

from cti.backoff import Backoff
from cti.config import EslNode, EventSettings
from event_service import metrics
from event_service.ingest import reconcile
from event_service.ingest.control_jobs import JobQueue
from event_service.ingest.esl import EslConnection, EslCorruptFrame, EslDisconnected, EslUnavailable
from event_service.ingest.events import (
    SUBSCRIPTION,
    ChannelEvent,
    RegistrationEvent,
    classify,
)
from event_service.ingest.lease import Lease
from event_service.ingest.node_lease import NodeLease
from event_service.ingest.reconciler import ReconcileMerge, ReconcileRun
from event_service.ingest.state import (
    Operation,
)
from event_service.ingest.store import LeaseLost, StateStore

log = logging.getLogger(__name__)

MAX_BATCH = 500
RECONCILE_CHUNK = 500
POLL_MS = 200
POLL_RECONCILING_MS = 10
"""Shorter waits while a reconcile runs: its corrections are merged soon after ready."""


class NodeMoved(Exception):
    """The node is no longer in this replica's share (``event_service.ingest.placement``)."""


RECONNECT_FIRST_SECONDS, RECONNECT_LIMIT_SECONDS = 0.2, 10.0
"""Waits between attempts to reach FreeSWITCH or Redis again (doubling up to the limit)."""


def _stamp(headers: Mapping[str, str]) -> float:
    """FreeSWITCH's ``Event-Date-Timestamp`` (µs since the epoch) in seconds; 0 if none."""
    text = headers.get("Event-Date-Timestamp", "")
    return int(text) / 1e6 if text.isdigit() else 0.0


class NodeWorker(threading.Thread):
    def __init__(
        self,
        node: EslNode,
        settings: EventSettings,
        client: redis.Redis,
        owner: str,
        stop: threading.Event,
        connect: Callable[[EslNode], EslConnection] = EslConnection,
        assigned: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(name=f"esl-{node.address}", daemon=True)
        self.node = node
        self.address = node.address
        self.settings = settings
        self.stop_event = stop
        self.lease = Lease(
            client,
            self.address,
            owner,
            settings.lease_seconds,
            registration_hash=settings.registration.hash,
        )
        self.store = StateStore(client, settings, self.address, self.lease)
        self.connect = connect
        # Whether this replica's share includes the node (``placement.Membership.mine``);
        # without one, every node is (a lone replica, tests of one worker).
        self.assigned = assigned or (lambda _node: True)
        self.commands: queue.Queue[tuple[str, str]] = queue.Queue()
        self.jobs = JobQueue()  # call-control bgapi jobs (event_service.api.control)
        self.connected = threading.Event()
        self.core_uuid = ""
        self.reconciles = 0
        self._warned: set[str] = set()
        self._flush_missed = False
        self.held = NodeLease(self.lease, stop)
        self._reconcile = ReconcileMerge(lambda: ReconcileRun(self.node, self.connect, self.store))
        self._pending_since = 0.0
        metrics.OLDEST_UNAPPLIED.labels(self.address).set_function(self.oldest_unapplied)
        metrics.declare_node(self.address)

    @property
    def holding(self) -> bool:
        """This replica holds the node's lease (it consumes the node, or tries to)."""
        return self.held.holding

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff(RECONNECT_FIRST_SECONDS, RECONNECT_LIMIT_SECONDS)
        while not self.stop_event.is_set():
            try:
                if self.held.holding and not self.assigned(self.address):
                    self.held.hand_over()  # not connected now (between retries): just release
                    continue
                if not self.held.holding and (
                    not self.assigned(self.address) or not self.held.take()
                ):
                    self.stop_event.wait(self.lease.renew_interval)
                    continue
                self._consume(backoff)
            except EslUnavailable as exc:  # unreachable, or refused our password / address
                self._once(f"esl-{type(exc).__name__}", f"{exc}, retrying")
                self.stop_event.wait(backoff.next())
            except EslCorruptFrame as exc:
                metrics.CORRUPT_FRAMES.labels(self.address).inc()
                log.warning(
                    "corrupt frame from python-ESL; reconnecting and reconciling",
                    extra={"node": self.address, "why": str(exc)},
                )
            except EslDisconnected as exc:
                log.warning(
                    "event socket lost, reconnecting", extra={"node": self.address, "why": str(exc)}
                )
                self.stop_event.wait(backoff.next())
            except reconcile.ReplyError as exc:
                self._once("reply", f"FreeSWITCH's tables unreadable ({exc}), retrying")
                self.stop_event.wait(backoff.next())
            except LeaseLost as lost:
                self.held.give_up(lost.holder)
            except NodeMoved:
                self.held.hand_over()
            except redis.RedisError as exc:
                metrics.REDIS_ERRORS.labels("worker").inc()
                self._once("redis", f"cannot reach Redis ({exc.__class__.__name__}), retrying")
                self.stop_event.wait(backoff.next())
            except Exception:
                log.exception("node worker failed; restarting it", extra={"node": self.address})
                self.stop_event.wait(backoff.next())
        self.held.release()

    def _check_placement(self, conn: EslConnection) -> None:
        """Raise :class:`NodeMoved` once the node left this replica's share, after a final
        read-and-apply of what FreeSWITCH already sent (the new owner reconciles the rest)."""
        if self.assigned(self.address):
            return
        batch: list[Mapping[str, str]] = []
        with contextlib.suppress(EslDisconnected):
            while len(batch) < MAX_BATCH and (headers := conn.receive(1)) is not None:
                batch.append(headers)
        if batch:
            self.process(batch, conn)
        raise NodeMoved(self.address)

    def _once(self, outage: str, message: str) -> None:
        """Log an outage when it starts, not at every retry (cleared once connected)."""
        if outage not in self._warned:
            log.warning(message, extra={"node": self.address})
            self._warned.add(outage)

    def flush(self, command: str, argument: str) -> None:
        """Queue an ``api`` command for this node (sent between reads by its thread). One
        that finds the node unreachable becomes a whole-cache flush once it is back."""
        if self.connected.is_set():
            self.commands.put((command, argument))
        else:
            self._flush_missed = True

    # -- one connection -------------------------------------------------------------------

    def _consume(self, backoff: Backoff) -> None:
        conn = self.connect(self.node)
        conn.open()
        try:
            conn.subscribe(SUBSCRIPTION)
            metrics.RECONNECTS.labels(self.address).inc()
            self.core_uuid = ""
            self._reconcile.run = None
            self.start_reconcile()
            self._read_loop(conn, backoff)
        finally:
            self.connected.clear()
            self.jobs.fail_all()
            metrics.CONNECTED.labels(self.address).set(0)
            conn.close()

    def _connected(self, backoff: Backoff) -> None:
        """The first reconcile is merged: Redis follows FreeSWITCH again."""
        if self._warned:
            log.info("reachable again", extra={"node": self.address})
        self._warned.clear()
        self.connected.set()
        metrics.CONNECTED.labels(self.address).set(1)
        backoff.reset()

    def _read_loop(self, conn: EslConnection, backoff: Backoff) -> None:
        last_event = time.monotonic()
        interval = self.settings.reconcile_interval
        next_reconcile = last_event + interval
        while not self.stop_event.is_set():
            self._send_commands(conn)
            self.held.check()
            self._check_placement(conn)
            if self._merge_reconcile() and not self.connected.is_set():
                self._connected(backoff)
            if interval and time.monotonic() >= next_reconcile:
                self.start_reconcile()
                next_reconcile = time.monotonic() + interval
            headers = conn.receive(POLL_MS if self._reconcile.run is None else POLL_RECONCILING_MS)
            if headers is None:
                if time.monotonic() - last_event > self.settings.heartbeat_timeout:
                    raise EslDisconnected(f"no event for {self.settings.heartbeat_timeout}s")
                continue
            batch = [headers]
            closed: EslDisconnected | None = None
            while len(batch) < MAX_BATCH:
                try:
                    more = conn.receive(1)  # (0 would mean: block)
                except EslDisconnected as exc:
                    # The events read before the close are real (FreeSWITCH's last
                    # hangups before a shutdown): apply them, then reconnect.
                    closed = exc
                    break
                if more is None:
                    break
                batch.append(more)
            last_event = time.monotonic()
            self.process(batch, conn)
            if closed is not None:
                raise closed

    def _send_jobs(self, conn: EslConnection) -> None:
        while (job := self.jobs.next_to_send()) is not None:
            job.accepted(conn.bgapi(job.command.name, job.command.argument, job.job_uuid))

    def _send_commands(self, conn: EslConnection) -> None:
        self._send_jobs(conn)
        # Checked every turn, not once per connection: a flush can find us "not
        # connected" just as the connection comes up.
        if self._flush_missed:
            self._flush_missed = False
            self.commands.put(("xml_flush_cache", ""))
        while True:
            try:
                command, argument = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                reply = conn.api(command, argument)
            except EslDisconnected:
                self._flush_missed = True  # it may not have arrived: flush all once back
                raise
            metrics.FLUSHES.labels(self.address).inc()
            log.info(
                "sent to FreeSWITCH",
                extra={
                    "node": self.address,
                    "command": f"{command} {argument}",
                    "reply": reply.strip(),
                },
            )

    def process(self, batch: Sequence[Mapping[str, str]], conn: EslConnection) -> None:
        stamps = [_stamp(headers) for headers in batch]
        self._pending_since = min((s for s in stamps if s), default=0.0)
        ops: list[Operation] = []
        kinds: Counter[str] = Counter()
        for index, headers in enumerate(batch):
            # A FreeSWITCH restart drops the socket, so one connection's events share one
            # Core-UUID: checking each batch's first and last event is enough.
            if index == 0 or index == len(batch) - 1:
                ops = self._check_core_uuid(headers.get("Core-UUID", ""), ops, conn)
            event = classify(headers)
            name = headers.get("Event-Name", "?")
            kinds[headers.get("Event-Subclass", name) if name == "CUSTOM" else name] += 1
            match event:
                case ChannelEvent(uuid=uuid):
                    ops.append(event)
                    self._reconcile.touched_channel(uuid)
                case RegistrationEvent(owner=owner):
                    ops.append(event)
                    self._reconcile.touched_registration(owner.key(self.settings.key_with_domain))
                case _ if name == "BACKGROUND_JOB":
                    self.jobs.finish(headers.get("Job-UUID", ""), headers.get("_body", ""))
        self._apply(ops)
        applied = time.time()
        self._pending_since = 0.0
        for kind, count in kinds.items():
            metrics.EVENTS.labels(self.address, kind).inc(count)
        lag = metrics.APPLY_LAG.labels(self.address)
        for stamp in stamps:  # every event, not one per batch: the histogram tells the truth
            if stamp:
                lag.observe(max(0.0, applied - stamp))

    def oldest_unapplied(self) -> float:
        """Seconds since the oldest event read and not yet applied was stamped (0: none)."""
        since = self._pending_since
        return max(0.0, time.time() - since) if since else 0.0

    def _check_core_uuid(
        self, core: str, ops: list[Operation], conn: EslConnection
    ) -> list[Operation]:
        if core and self.core_uuid and core != self.core_uuid:
            log.warning("FreeSWITCH restarted (new Core-UUID)", extra={"node": self.address})
            metrics.RESTARTS.labels(self.address).inc()
            self._apply(ops)
            self.core_uuid = core
            if self._reconcile.run is not None:
                self._reconcile.run.discard = True  # it may have read the tables before the restart
            self.start_reconcile()
            return []
        if core:
            self.core_uuid = core
        return ops

    def _apply(self, ops: Sequence[Operation]) -> None:
        changed = self.store.apply(ops)
        if changed:
            metrics.STATE_CHANGES.labels(self.address).inc(changed)

    # -- reconcile ------------------------------------------------------------------------

    def start_reconcile(self) -> None:
        """Read FreeSWITCH's tables beside the event stream (one run at a time: asked for
        during a run, another starts when it is merged)."""
        self._reconcile.start()

    def _merge_reconcile(self) -> bool:
        """Apply a finished reconcile's corrections (minus what live events changed since
        it began); ``True`` when one was merged."""
        merged = self._reconcile.finished()
        if merged is None:
            return False
        found, ops = merged
        for start in range(0, len(ops), RECONCILE_CHUNK):
            self.held.check()
            self._apply(ops[start : start + RECONCILE_CHUNK])
        for (kind, op_name), count in reconcile.correction_counts(ops).items():
            if count:
                metrics.RECONCILE_CORRECTIONS.labels(self.address, kind, op_name).inc(count)
        self.reconciles += 1
        log.info(
            "reconciled with FreeSWITCH",
            extra={
                "node": self.address,
                "registrations": found.registrations,
                "channels": found.channels,
                "corrections": len(ops),
            },
        )
        self._reconcile.start_if_asked()
        return True
