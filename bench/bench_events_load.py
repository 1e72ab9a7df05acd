"""The event path under load: one extension holding K live calls.

A fake FreeSWITCH event socket (loopback) generates calls for extension 1000 built from
the captured frames (create, answer, hangup with fresh uuids). First K calls are set up
and left live; then every new call is created and answered while the oldest live one
hangs up, so the extension keeps K live calls. For K = 10, 150, 500, in the same run:

- raw: a python-ESL connection that only receives the same stream: the ceiling;
- events/s: the event service's node worker applying it to a throw-away redis-server
  (sent as fast as the socket takes it; timed until the last change is in the log);
- lag p50/p99: the same worker at a fixed rate (``--rate`` events/s), per event from its
  Event-Date-Timestamp to its batch committed;
- log bytes/event: what the change log's entries carry per change.

Then reconcile: ``--unknown`` channels FreeSWITCH has and Redis does not, reconciled while
events flow at ``--rate``: seconds from the reconcile's start to its merge.

Usage: ``python bench/bench_events_load.py [--calls 1500] [--rate 300] [--unknown 500]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ESL  # noqa: E402
import redis  # noqa: E402

from cti import redis_keys  # noqa: E402
from cti.config import CallTarget, EslNode, EventSettings, PublishTarget  # noqa: E402
from event_service.ingest.esl import EslConnection  # noqa: E402
from event_service.ingest.events import SUBSCRIPTION  # noqa: E402
from event_service.ingest.worker import NodeWorker, _stamp  # noqa: E402
from tests.eslserver import FakeFreeSwitch, call_events, encode_event, stamped  # noqa: E402
from tests.support import running_redis  # noqa: E402

FIELDS = (
    "Caller-Destination-Number",
    "Caller-Caller-ID-Number",
    "Caller-Callee-ID-Number",
    "Caller-Profile-Created-Time",
    "Caller-Channel-Answered-Time",
)
STREAM = redis_keys.EVENTS_LOG_STREAM


def _uuid(n: int) -> str:
    return f"{n:08d}-0000-4000-8000-000000000000"


def steady_calls(live: int, first: int, count: int) -> list[dict[str, str]]:
    """``count`` new calls (create + answer), each followed by the hangup of the oldest
    live one: the extension keeps ``live`` calls (uuids ``first - live`` .. are live)."""
    events = []
    for n in range(first, first + count):
        create, answer, _ = call_events(_uuid(n))
        _, _, hangup = call_events(_uuid(n - live))
        events += [create, answer, hangup]
    return events


def frames(events: Sequence[Mapping[str, str]], core_uuid: str) -> bytes:
    return b"".join(encode_event({**stamped(e), "Core-UUID": core_uuid}) for e in events)


class TimedWorker(NodeWorker):
    """The node worker, noting each event's lag as it commits (bench only)."""

    lags: list[float]

    def process(self, batch: Sequence[Mapping[str, str]], conn: EslConnection) -> None:
        super().process(batch, conn)
        now = time.time()
        self.lags.extend(now - stamp for stamp in map(_stamp, batch) if stamp)


def _settings(node: EslNode) -> EventSettings:
    return replace(
        EventSettings(),
        nodes=(node,),
        registration=PublishTarget("registrations"),
        call=CallTarget("calls", fields=FIELDS),
        heartbeat_timeout=600.0,
        reconcile_interval=0.0,
    )


@contextmanager
def running_worker(redis_url: str, fs: FakeFreeSwitch) -> Iterator[TimedWorker]:
    stop = threading.Event()
    client = redis.Redis.from_url(redis_url)
    node = EslNode("127.0.0.1", fs.port)
    worker = TimedWorker(node, _settings(node), client, "bench", stop)
    worker.lags = []
    worker.start()
    try:
        wait(worker.connected.is_set, "worker connected")
        yield worker
    finally:
        stop.set()
        worker.join(timeout=10)
        client.close()
        fs.drop()


def wait(predicate: object, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {what}")
        time.sleep(0.002)


def raw_rate(fs: FakeFreeSwitch, data: bytes, count: int) -> float:
    conn = ESL.ESLconnection("127.0.0.1", str(fs.port), "ClueCon")
    conn.sendRecv(f"event plain {SUBSCRIPTION}")
    fs.wait_subscribed()
    sender = threading.Thread(target=fs.send_raw, args=(data,))
    start = time.perf_counter()
    sender.start()
    for received in range(count):
        if conn.recvEventTimed(5000) is None:
            raise RuntimeError(f"raw loop starved after {received} events")
    elapsed = time.perf_counter() - start
    sender.join()
    conn.disconnect()
    fs.drop()
    return count / elapsed


def log_bytes(client: redis.Redis, after: str) -> tuple[int, int]:
    """(entries, bytes of their fields) after stream id ``after``."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(STREAM, min=f"({after}")  # type: ignore[assignment]
    size = sum(len(k) + len(v) for _, fields in entries for k, v in fields.items())
    return len(entries), size


def last_id(client: redis.Redis) -> str:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrevrange(STREAM, count=1)  # type: ignore[assignment]
    return entries[0][0].decode() if entries else "0-0"


def paced(fs: FakeFreeSwitch, events: Sequence[Mapping[str, str]], rate: float) -> None:
    """Send at ``rate`` events/s, in small bursts, each stamped when sent."""
    burst = max(1, int(rate / 100))
    start = time.perf_counter()
    for index in range(0, len(events), burst):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        fs.send_events([stamped(e) for e in events[index : index + burst]])


def one_k(redis_url: str, live: int, calls: int, rate: float) -> dict[str, float]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    fs = FakeFreeSwitch().start()
    try:
        flood = steady_calls(live, live, calls)
        raw = raw_rate(fs, frames(flood, fs.core_uuid), len(flood))
        with running_worker(redis_url, fs) as worker:
            setup = [e for n in range(live) for e in call_events(_uuid(n))[:2]]
            fs.send_events([stamped(e) for e in setup])
            wait(lambda: client.xlen(STREAM) >= len(setup), "K live calls")
            start_id, base = last_id(client), client.xlen(STREAM)
            data = frames(flood, fs.core_uuid)
            start = time.perf_counter()
            fs.send_raw(data)
            wait(lambda: client.xlen(STREAM) >= base + len(flood), "flood applied")
            applied = len(flood) / (time.perf_counter() - start)
            entries, size = log_bytes(client, start_id)
            worker.lags.clear()
            measured = steady_calls(live, live + calls, max(100, int(rate)))
            base = client.xlen(STREAM)
            paced(fs, measured, rate)
            wait(lambda: client.xlen(STREAM) >= base + len(measured), "paced applied")
            lags = sorted(worker.lags)
        return {
            "raw": raw,
            "applied": applied,
            "p50": lags[len(lags) // 2] * 1000,
            "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000,
            "log_bytes": size / max(entries, 1),
            "record_kb": len(client.hget("calls", "1000") or b"") / 1024,
        }
    finally:
        fs.stop()
        client.close()


def reconcile_while_flowing(redis_url: str, unknown: int, rate: float) -> tuple[float, int]:
    """Seconds from a FreeSWITCH restart being noticed (new Core-UUID) to the reconcile's
    corrections merged, and live events applied meanwhile."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    fs = FakeFreeSwitch().start()
    uuids = [_uuid(1_000_000 + n) for n in range(unknown)]
    try:
        with running_worker(redis_url, fs) as worker:
            flowing = steady_calls(10, 10, int(rate) * 3)
            sender = threading.Thread(target=paced, args=(fs, flowing, rate))
            sender.start()
            time.sleep(0.5)
            fs.set_state(
                channels=[{"uuid": u, "callstate": "ACTIVE"} for u in uuids],
                dumps={
                    u: {**call_events(u, "2000")[1], "Event-Name": "CHANNEL_DATA"} for u in uuids
                },
            )
            before, events_before = worker.reconciles, len(worker.lags)
            start = time.perf_counter()
            fs.core_uuid = "restarted"  # the next event makes the worker reconcile
            wait(lambda: worker.reconciles > before, "reconcile merged")
            elapsed = time.perf_counter() - start
            during = len(worker.lags) - events_before
            sender.join()
            record: bytes = client.hget("calls", "2000") or b""  # type: ignore[assignment]
            if record.count(b"-0000-4000-8000-") < unknown:
                raise RuntimeError("reconcile missed channels")
        return elapsed, during
    finally:
        fs.stop()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1500, help="calls in the flood (x3 events)")
    parser.add_argument("--rate", type=float, default=300.0, help="events/s for the lag phase")
    parser.add_argument("--unknown", type=int, default=500, help="channels to reconcile")
    parser.add_argument("--live", type=int, nargs="*", default=[10, 150, 500])
    args = parser.parse_args()
    with running_redis() as server:
        results = {k: one_k(server.url, k, args.calls, args.rate) for k in args.live}
        seconds, during = reconcile_while_flowing(server.url, args.unknown, args.rate)
    print(
        f"one extension holding K live calls; flood of {3 * args.calls} events; "
        f"lag at {args.rate:.0f} events/s"
    )
    print(
        f"{'K':>5} {'raw ESL ev/s':>13} {'applied ev/s':>13} {'vs raw':>7} {'vs K=first':>10} "
        f"{'lag p50 ms':>10} {'lag p99 ms':>10} {'log B/event':>11} {'record KB':>9}"
    )
    first = results[args.live[0]]["applied"]
    for k, r in results.items():
        print(
            f"{k:>5} {r['raw']:>13,.0f} {r['applied']:>13,.0f} {r['applied'] / r['raw']:>7.0%} "
            f"{r['applied'] / first:>10.0%} {r['p50']:>10.1f} {r['p99']:>10.1f} "
            f"{r['log_bytes']:>11.0f} {r['record_kb']:>9.1f}"
        )
    print(
        f"reconcile of {args.unknown} unknown channels while events flow at {args.rate:.0f}/s: "
        f"{seconds:.2f} s; {during} live events applied meanwhile"
    )
    print(f"(median raw rate {statistics.median(r['raw'] for r in results.values()):,.0f} ev/s)")


if __name__ == "__main__":
    main()
