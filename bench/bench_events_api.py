"""Event gRPC API throughput, each beside a raw redis-py baseline measured in the same run.

The server (``event_service.app.create_grpc_server``) runs in its own process, so
client and server do not share a GIL; Redis is a throw-away ``redis-server``. All
loopback. State is seed-shaped (the captured registration JSON, ~1.4 KB each).

1. Watch, change delivery: ``--changes`` change-log entries replayed to one client
   (``resume_token`` = the start) vs. redis-py ``XREAD COUNT 500`` of the same entries.
2. Watch, snapshot: ``--entries`` registrations until ``TYPE_SNAPSHOT_COMPLETE`` vs.
   ``HGETALL``.
3. ListRegistrations, every page of ``--page-size`` vs. ``HGETALL``.
4. Fan-out: ``--watchers`` clients watching while ``--live`` changes are written; changes
   delivered per second in total.

Usage: ``python bench/bench_events_api.py [--entries 20000] [--changes 20000]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import redis  # noqa: E402

from cti import redis_keys  # noqa: E402
from cti.config import GrpcSettings, parse_settings  # noqa: E402
from cti.v1 import events_pb2, events_pb2_grpc  # noqa: E402
from tests.support import SEED_DIR, free_port, running_redis, wait_for_port  # noqa: E402

Event = events_pb2.WatchEvent


def serve(port: int, redis_url: str) -> None:
    """The server process: ``--serve``."""
    from event_service.app import create_grpc_server

    base = parse_settings("{}")
    settings = replace(
        base,
        redis_url=redis_url,
        events=replace(base.events, grpc=GrpcSettings(f"127.0.0.1:{port}")),
    )
    server = create_grpc_server(settings)
    server.start()
    server.wait_for_termination()


def registration_value(extension: str) -> str:
    value = json.loads((SEED_DIR / "registration-value.json").read_text())
    value.update({"from-user": extension, "username": extension, "to-user": extension})
    return json.dumps(value)


def write_changes(client: redis.Redis, count: int, first: int = 0) -> None:
    """Core-style changes (hash write + XADD in one MULTI/EXEC), 100 per round trip."""
    for start in range(first, first + count, 100):
        with client.pipeline(transaction=True) as pipe:
            for n in range(start, min(start + 100, first + count)):
                key = str(100000 + n % 5000)
                value = registration_value(key)
                pipe.hset("registrations", key, value)
                pipe.xadd(
                    redis_keys.EVENTS_LOG_STREAM,
                    {"kind": "registration", "op": "set", "key": key, "value": value, "node": "b"},
                    maxlen=redis_keys.EVENTS_LOG_MAXLEN,
                    approximate=True,
                )
            pipe.execute()


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def row(what: str, count: int, ours: float, baseline: float, baseline_name: str) -> None:
    print(
        f"{what:<34} {count / ours:>10,.0f}/s   {baseline_name:<22} {count / baseline:>10,.0f}/s"
        f"   ratio {baseline / ours:5.2f}"
    )


def bench_delivery(stub: Any, client: redis.Redis, changes: int) -> None:
    client.flushall()
    write_changes(client, changes)

    def watch() -> None:
        seen = 0
        for response in stub.Watch(events_pb2.WatchRequest(resume_token="0-0")):
            seen += len(response.events)
            if seen == changes:
                return

    def raw() -> None:
        position, seen = b"0-0", 0
        while seen < changes:
            reply: Any = client.xread({redis_keys.EVENTS_LOG_STREAM: position}, count=500)
            for _, entries in reply:
                seen += len(entries)
                position = entries[-1][0]

    row("Watch: changes delivered", changes, timed(watch), timed(raw), "raw XREAD")


def bench_snapshot_and_list(stub: Any, client: redis.Redis, entries: int, page: int) -> None:
    client.flushall()
    for start in range(0, entries, 1000):
        client.hset(
            "registrations",
            mapping={str(n): registration_value(str(n)) for n in range(start, start + 1000)},
        )

    def snapshot() -> None:
        for response in stub.Watch(events_pb2.WatchRequest()):
            if response.events[-1].type == Event.TYPE_SNAPSHOT_COMPLETE:
                return

    def raw() -> None:
        client.hgetall("registrations")

    baseline = timed(raw)
    row("Watch: snapshot entries", entries, timed(snapshot), baseline, "raw HGETALL")

    def list_all() -> None:
        token, seen = "", 0
        while True:
            answer = stub.ListRegistrations(
                events_pb2.ListRegistrationsRequest(page_size=page, page_token=token)
            )
            seen += len(answer.registrations)
            token = answer.next_page_token
            if not token:
                assert seen == entries, seen
                return

    row(f"List: entries (pages of {page})", entries, timed(list_all), baseline, "raw HGETALL")


def bench_fan_out(stub: Any, client: redis.Redis, watchers: int, live: int) -> None:
    client.flushall()
    ready = threading.Barrier(watchers + 1)
    done = []

    def watch() -> None:
        seen = 0
        for response in stub.Watch(events_pb2.WatchRequest()):
            for event in response.events:
                if event.type == Event.TYPE_SNAPSHOT_COMPLETE:
                    ready.wait()
                elif event.type == Event.TYPE_UPSERT:
                    seen += 1
            if seen == live:
                done.append(time.perf_counter())
                return

    threads = [threading.Thread(target=watch) for _ in range(watchers)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    write_changes(client, live)
    written = time.perf_counter() - start
    for thread in threads:
        thread.join(120)
    elapsed = max(done) - start
    print(
        f"{'Fan-out: ' + str(watchers) + ' watchers':<34} {live * watchers / elapsed:>10,.0f}/s"
        f"   (writes alone {live / written:,.0f}/s; all delivered {elapsed:.2f}s after the"
        f" first write, writing took {written:.2f}s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--changes", type=int, default=20000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=8)
    parser.add_argument("--live", type=int, default=5000)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return
    with running_redis() as redis_server:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), redis_server.url], cwd=REPO
        )
        try:
            wait_for_port(port)
            channel = grpc.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]
            )
            stub = events_pb2_grpc.EventServiceStub(channel)
            client = redis.Redis.from_url(redis_server.url)
            print(f"{'':<34} {'ours':>12}   {'baseline':<22} {'':>12}   baseline/ours time")
            bench_delivery(stub, client, args.changes)
            bench_snapshot_and_list(stub, client, args.entries, args.page_size)
            bench_fan_out(stub, client, args.watchers, args.live)
            channel.close()
            client.close()
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
