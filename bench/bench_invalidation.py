"""How soon every directory replica answers a change written to Redis (goal: 100 ms).

Two replicas (``python -m directory_service``), caches warm. ``--writes`` times each:
a write by hand (``HSET`` through redis-py, as ``redis-cli`` would: the domain is
reloaded) and a write through replica 1's gRPC API (precise: one extension re-read),
each of a new password; then both replicas are asked again and again (a new connection
per lookup, as mod_xml_curl does) until each answers it. Printed: time from the write's
reply to each replica's first new answer (p50/p99/max), beside the baseline from the same
run: one lookup's round trip, the least a polling client could observe. Loopback only.

Then the same again **under load**: ``--load`` processes (default 4) send lookups to both
replicas as fast as they can for the whole measurement (the replicas, Redis and the
clients then compete for the CPUs, as on a busy node). Keyspace notifications are
asynchronous: this is the window in which a replica may still answer the old value (a
deleted or changed extension can still authenticate), the bound docs/realtime.md states.

Usage: ``python bench/bench_invalidation.py [--writes 300] [--extensions 10000] [--load 4]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import redis  # noqa: E402
from google.protobuf import field_mask_pb2  # noqa: E402

from cti import redis_keys  # noqa: E402
from cti.v1 import directory_pb2 as pb  # noqa: E402
from cti.v1 import directory_pb2_grpc  # noqa: E402
from tests.directory.service import Service, name_values, parse_user, running_service  # noqa: E402
from tests.support import running_redis  # noqa: E402

DOMAIN = "bench.example"


def password(service: Service, user: str) -> str:
    user_element = parse_user(service.lookup(DOMAIN, user))[2]
    return name_values(user_element, "params", "param")["password"]


def value(secret: str) -> str:
    return json.dumps({"param": {"password": secret}, "variable": {}, "attribute": {}})


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def keep_looking_up(ports: list[int], extensions: int, stop: Any) -> None:
    """A load process: lookups of random users on every replica until ``stop`` is set."""
    services = [Service(port, 0, None, Path()) for port in ports]  # type: ignore[arg-type]
    while not stop.is_set():
        for service in services:
            service.lookup(DOMAIN, str(1000 + random.randrange(extensions)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--extensions", type=int, default=10000)
    parser.add_argument("--load", type=int, default=4, help="lookup load processes")
    args = parser.parse_args()
    with running_redis("--notify-keyspace-events", "KEA") as server, ExitStack() as stack:
        client = redis.Redis.from_url(server.url)
        key = redis_keys.extensions(DOMAIN)
        client.hset(key, mapping={str(1000 + n): value("v0") for n in range(args.extensions)})
        replicas = [stack.enter_context(running_service(server.url)) for _ in range(2)]
        for replica in replicas:
            replica.wait_until_live()
            password(replica, "1000")  # warm: the domain is cached from here on
        round_trips: list[float] = []
        for replica in replicas:
            for _ in range(50):
                start = time.perf_counter()
                password(replica, "1000")
                round_trips.append(time.perf_counter() - start)

        def propagation(write: Callable[[str, str], None]) -> list[float]:
            delays: list[float] = []
            for n in range(args.writes):
                user, secret = str(1000 + n % args.extensions), f"{write.__name__}{n}"
                write(user, secret)
                written = time.perf_counter()
                for replica in replicas:
                    while password(replica, user) != secret:
                        if time.perf_counter() - written > 5:
                            sys.exit(f"a replica never saw write {n}: FAILED")
                    delays.append(time.perf_counter() - written)
            return delays

        def by_hand(user: str, secret: str) -> None:
            client.hset(key, user, value(secret))

        channel = grpc.insecure_channel(f"127.0.0.1:{replicas[0].grpc_port}")
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)

        def by_api(user: str, secret: str) -> None:
            stub.UpdateExtension(
                pb.UpdateExtensionRequest(
                    extension=pb.Extension(
                        name=f"domains/{DOMAIN}/extensions/{user}", password=secret
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["password"]),
                ),
                timeout=5,
            )

        results = {"by hand (HSET)": propagation(by_hand), "gRPC API": propagation(by_api)}
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        ports = [replica.http_port for replica in replicas]
        load = [
            context.Process(target=keep_looking_up, args=(ports, args.extensions, stop))
            for _ in range(args.load)
        ]
        for process in load:
            process.start()
        try:
            time.sleep(1.0)  # the load is running
            results["by hand, loaded"] = propagation(by_hand)
            results["gRPC API, loaded"] = propagation(by_api)
        finally:
            stop.set()
            for process in load:
                process.join(timeout=30)
        channel.close()
        client.close()
    ms = 1000.0
    print(
        f"{args.writes} writes each way, 2 replicas, {args.extensions} extensions in the "
        f"domain; loaded = {args.load} processes sending lookups to both replicas meanwhile"
    )
    baseline = "lookup round trip (baseline)"
    print(
        f"{baseline:<44}p50 {statistics.median(round_trips) * ms:6.2f} ms"
        f"   p99 {percentile(round_trips, 0.99) * ms:6.2f} ms"
    )
    for label, delays in results.items():
        print(
            f"write {label:<17} -> answered  p50 {statistics.median(delays) * ms:6.2f} ms"
            f"   p99 {percentile(delays, 0.99) * ms:6.2f} ms   max {max(delays) * ms:6.2f} ms"
            f"   p99/baseline {percentile(delays, 0.99) / percentile(round_trips, 0.99):5.1f}x"
        )
    print("goal: every replica answers a change within 100 ms")


if __name__ == "__main__":
    main()
