"""One thread per FreeSWITCH node: lease -> connect -> subscribe -> reconcile -> read loop.

The loop reads what the socket has (a batch when events queue up), folds it and writes it
in one transaction, renews the lease, sends queued ``api`` commands (cache flushes), and
watches for silence (FreeSWITCH sends HEARTBEAT every 20 s) and for a new ``Core-UUID``
(a FreeSWITCH restart: reconcile). Any connection problem -> close, back off, retry; the
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

from cti.config import EslNode, EventSettings
from event_service import metrics, reconcile
from event_service.control_jobs import JobQueue
from event_service.esl import EslConnection, EslCorruptFrame, EslDisconnected, EslUnavailable
from event_service.events import (
    SUBSCRIPTION,
    ChannelEvent,
    Heartbeat,
    RegistrationEvent,
    classify,
    parse_plain,
)
from event_service.lease import Lease
from event_service.state import Operation, StaleCall, StaleRegistration
from event_service.store import LeaseLost, StateStore

log = logging.getLogger(__name__)

MAX_BATCH = 500
RECONCILE_CHUNK = 500
POLL_MS = 200


class Backoff:
    def __init__(self, first: float = 0.2, limit: float = 10.0) -> None:
        self.first, self.limit, self.current = first, limit, first

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.limit)
        return delay

    def reset(self) -> None:
        self.current = self.first


class NodeWorker(threading.Thread):
    def __init__(
        self,
        node: EslNode,
        settings: EventSettings,
        client: redis.Redis,
        owner: str,
        stop: threading.Event,
        connect: Callable[[EslNode], EslConnection] = EslConnection,
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
        self.commands: queue.Queue[tuple[str, str]] = queue.Queue()
        self.jobs = JobQueue()  # call-control bgapi jobs (event_service.control)
        self.connected = threading.Event()
        self.core_uuid = ""
        self.reconciles = 0
        self._warned: set[str] = set()
        self._flush_missed = False
        self._holding = False
        self._next_renew = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff()
        while not self.stop_event.is_set():
            try:
                if not self.lease.acquire():
                    self._holding = False
                    self.stop_event.wait(self.lease.renew_interval)
                    continue
                if not self._holding:
                    log.info("consuming FreeSWITCH node", extra={"node": self.address})
                    self._holding = True
                self._consume(backoff)
            except EslUnavailable:
                self._once("esl", f"cannot reach FreeSWITCH at {self.address}, retrying")
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
            except LeaseLost:
                log.warning("lease taken over by another replica", extra={"node": self.address})
                self._holding = False
            except redis.RedisError as exc:
                self._once("redis", f"cannot reach Redis ({exc.__class__.__name__}), retrying")
                self.stop_event.wait(backoff.next())
            except Exception:
                log.exception("node worker failed; restarting it", extra={"node": self.address})
                self.stop_event.wait(backoff.next())
        with contextlib.suppress(redis.RedisError):
            self.lease.release()

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
            self._next_renew = 0.0
            self.reconcile(conn)
            if self._warned:
                log.info("reachable again", extra={"node": self.address})
            self._warned.clear()
            self.connected.set()
            metrics.CONNECTED.labels(self.address).set(1)
            backoff.reset()
            self._read_loop(conn)
        finally:
            self.connected.clear()
            self.jobs.fail_all()
            metrics.CONNECTED.labels(self.address).set(0)
            conn.close()

    def _renew_if_due(self) -> None:
        """Keep the lease (also from inside a long reconcile: it must not lapse mid-way)."""
        now = time.monotonic()
        if now >= self._next_renew:
            if not self.lease.renew():
                raise LeaseLost(self.address)
            self._next_renew = now + self.lease.renew_interval

    def _read_loop(self, conn: EslConnection) -> None:
        last_event = time.monotonic()
        interval = self.settings.reconcile_interval
        next_reconcile = last_event + interval
        while not self.stop_event.is_set():
            self._send_commands(conn)
            self._renew_if_due()
            if interval and time.monotonic() >= next_reconcile:
                self.reconcile(conn)  # events queued meanwhile are applied after it
                next_reconcile = time.monotonic() + interval
            headers = conn.receive(POLL_MS)
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
            if isinstance(event, RegistrationEvent | ChannelEvent):
                ops.append(event)
            elif name == "BACKGROUND_JOB":
                self.jobs.finish(headers.get("Job-UUID", ""), headers.get("_body", ""))
            elif isinstance(event, Heartbeat):
                pass
        self._apply(ops)
        for kind, count in kinds.items():
            metrics.EVENTS.labels(self.address, kind).inc(count)
        stamp = batch[-1].get("Event-Date-Timestamp", "")
        if stamp.isdigit():
            metrics.APPLY_LAG.labels(self.address).observe(max(0.0, time.time() - int(stamp) / 1e6))

    def _check_core_uuid(
        self, core: str, ops: list[Operation], conn: EslConnection
    ) -> list[Operation]:
        if core and self.core_uuid and core != self.core_uuid:
            log.warning("FreeSWITCH restarted (new Core-UUID)", extra={"node": self.address})
            metrics.RESTARTS.labels(self.address).inc()
            self._apply(ops)
            self.core_uuid = core
            self.reconcile(conn)
            return []
        if core:
            self.core_uuid = core
        return ops

    def _apply(self, ops: Sequence[Operation]) -> None:
        changed = self.store.apply(ops)
        if changed:
            metrics.STATE_CHANGES.labels(self.address).inc(changed)

    # -- reconcile ------------------------------------------------------------------------

    def reconcile(self, conn: EslConnection) -> None:
        """Bring this node's part of Redis to FreeSWITCH's own tables."""
        profiles = reconcile.profile_names(conn.api("sofia", "xmlstatus"))
        live_regs = []
        for profile in profiles:
            reply = conn.api("sofia", f"xmlstatus profile {profile} reg")
            live_regs.extend(reconcile.registrations_of(profile, reply))
        live_channels = reconcile.channels_of(conn.api("show", "channels as json"))
        snapshot = self.store.snapshot()
        syncs = reconcile.plan_registrations(
            snapshot.devices, live_regs, self.store.rules, int(time.time() * 1e6)
        )
        plan = reconcile.plan_channels(snapshot.channels, live_channels)
        dumped: list[Operation] = []
        for uuid in plan.to_dump:
            self._renew_if_due()
            reply = conn.api("uuid_dump", uuid)
            if reply.startswith("-ERR"):
                continue  # ended between the two commands
            event = classify(parse_plain(reply))
            if isinstance(event, ChannelEvent) and event.owner is not None:
                dumped.append(event)
        # Entries nothing backs go last: what reconcile just added is not stale.
        stale: list[Operation] = [
            *(StaleRegistration(key) for key in snapshot.stale_registrations),
            *(StaleCall(key, uuid) for key, uuid in snapshot.stale_calls),
        ]
        ops: list[Operation] = [*syncs, *plan.gone, *dumped, *stale]
        for start in range(0, len(ops), RECONCILE_CHUNK):
            self._renew_if_due()
            self._apply(ops[start : start + RECONCILE_CHUNK])
        for sync in syncs:
            if sync.remove:
                metrics.RECONCILE_CORRECTIONS.labels(self.address, "registration", "delete").inc(
                    len(sync.remove)
                )
            if sync.add:
                metrics.RECONCILE_CORRECTIONS.labels(self.address, "registration", "set").inc(
                    len(sync.add)
                )
        if plan.gone:
            metrics.RECONCILE_CORRECTIONS.labels(self.address, "call", "delete").inc(len(plan.gone))
        if dumped:
            metrics.RECONCILE_CORRECTIONS.labels(self.address, "call", "set").inc(len(dumped))
        if stale:
            metrics.RECONCILE_CORRECTIONS.labels(self.address, "stale", "delete").inc(len(stale))
        self.reconciles += 1
        log.info(
            "reconciled with FreeSWITCH",
            extra={
                "node": self.address,
                "registrations": len(live_regs),
                "channels": len(live_channels),
                "corrections": len(ops),
            },
        )
