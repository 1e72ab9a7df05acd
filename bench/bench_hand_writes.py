"""Writes by hand to a big domain with several directory replicas: precise changes (the
event service's directory watch) against today's drop-and-reload.

One domain of ``--extensions`` (100,000) extensions, ``--replicas`` (3) directory
replicas (``python -m directory_service``), caches warm. A client looks up other
extensions of that domain without pause (a new connection per lookup, as mod_xml_curl
does, replicas in turn). Three phases of the same length, in this run:

1. baseline: no writes;
2. ``--writes`` hand ``HSET``s of one extension's password, no watch: every replica drops
   the domain and reloads it whole;
3. the same writes with the directory watch running (one process, as one event-service
   replica leads it): the watch re-reads the domain once, replicas re-read one extension.

Printed per phase: lookup p50/p99 (and the ratio to the baseline's), Redis time per write
(``INFO commandstats``: microseconds of every command the phase ran, minus the baseline's
rate for the lookups) and full reads per write (``HGETALL`` of the domain by a replica, or
one chunked ``HSCAN`` pass by the watch). Loopback only.

Usage: ``python bench/bench_hand_writes.py [--extensions 100000] [--replicas 3]
[--writes 20] [--interval 0.5]``. Takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from cti import redis_keys  # noqa: E402
from tests.directory.service import Service, name_values, parse_user, running_service  # noqa: E402
from tests.support import running_redis  # noqa: E402

DOMAIN = "big.example"
WRITTEN = "1000"

WATCH = """
import sys, threading
from event_service.ingest.directory_watch import DirectoryWatch
stop = threading.Event()
watch = DirectoryWatch(sys.argv[1], "bench", 5.0, registration_hash="registrations", stop=stop)
watch.start()
watch.leading.wait(120)
print("leading", watch.reads, flush=True)
sys.stdin.read()
print(watch.reads, flush=True)
stop.set()
watch.join(10)
"""


def value(secret: str, n: int) -> str:
    return json.dumps(
        {
            "param": {"password": secret, "vm-password": str(n), "dial-string": "{^^:x}" * 8},
            "variable": {
                "user_context": "default",
                "effective_caller_id_name": f"Extension {n}",
                "effective_caller_id_number": str(n),
                "accountcode": f"acct-{n % 97}",
                "toll_allow": "domestic,international,local",
                "callgroup": "techsupport",
            },
            "attribute": {"number-alias": f"a{n}"},
        }
    )


def password(service: Service, user: str) -> str:
    user_element = parse_user(service.lookup(DOMAIN, user))[2]
    return name_values(user_element, "params", "param")["password"]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


class Lookups(threading.Thread):
    """Looks up other extensions without pause, recording each lookup's time."""

    def __init__(self, replicas: list[Service], extensions: int) -> None:
        super().__init__(daemon=True)
        self.replicas, self.extensions = replicas, extensions
        self.samples: list[float] = []
        self.errors = 0
        """Lookups answered other than 200 (503: the reload outlasted the deadline)."""
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            replica = self.replicas[n % len(self.replicas)]
            user = str(1001 + (n * 7919) % (self.extensions - 1))
            start = time.perf_counter()
            try:
                replica.lookup(DOMAIN, user)
            except AssertionError:  # the service's answer was not 200
                self.errors += 1
            self.samples.append(time.perf_counter() - start)


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    stats = client.info("commandstats")
    return {name: (int(v["calls"]), int(v["usec"])) for name, v in stats.items()}


def phase(
    client: redis.Redis,
    replicas: list[Service],
    extensions: int,
    writes: int,
    interval: float,
    label: str,
) -> dict[str, float]:
    key = redis_keys.extensions(DOMAIN)
    lookups = Lookups(replicas, extensions)
    before = command_stats(client)
    started = time.perf_counter()
    lookups.start()
    for n in range(writes or 1):
        time.sleep(interval)
        if writes:
            client.hset(key, WRITTEN, value(f"{label}-{n}", 1000))
    time.sleep(interval * 2)  # the last write's consequences
    lookups.stop.set()
    lookups.join()
    elapsed = time.perf_counter() - started
    after = command_stats(client)
    usec = sum(after[c][1] - before.get(c, (0, 0))[1] for c in after if c != "cmdstat_info")
    full_reads = after.get("cmdstat_hgetall", (0, 0))[0] - before.get("cmdstat_hgetall", (0, 0))[0]
    scans = [
        after.get("cmdstat_hscan", (0, 0))[i] - before.get("cmdstat_hscan", (0, 0))[i]
        for i in (0, 1)
    ]
    return {
        "hscan_calls": scans[0],
        "hscan_usec": scans[1],
        "p50": percentile(lookups.samples, 0.5),
        "p99": percentile(lookups.samples, 0.99),
        "lookups": len(lookups.samples),
        "errors": lookups.errors,
        "usec": usec,
        "elapsed": elapsed,
        "full_reads": full_reads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extensions", type=int, default=100000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    with running_redis("--notify-keyspace-events", "KEA") as server, ExitStack() as stack:
        client = redis.Redis.from_url(server.url)
        key = redis_keys.extensions(DOMAIN)
        for start in range(0, args.extensions, 10000):
            client.hset(
                key,
                mapping={str(1000 + n): value("v0", 1000 + n) for n in range(start, start + 10000)},
            )
        size = client.memory_usage(key) or 0
        print(f"domain: {args.extensions} extensions, {size / 1e6:.0f} MB in Redis")
        replicas = [stack.enter_context(running_service(server.url)) for _ in range(args.replicas)]
        for replica in replicas:
            replica.wait_until_live(timeout=60)
            password(replica, "1001")  # warm: the domain is cached from here on
        base = phase(client, replicas, args.extensions, 0, args.interval * args.writes, "base")
        rate = base["usec"] / base["lookups"]  # Redis time of one lookup (a hit: ~0)
        no_watch = phase(client, replicas, args.extensions, args.writes, args.interval, "plain")
        watch = subprocess.Popen(
            [sys.executable, "-c", WATCH, server.url],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert watch.stdout is not None
            leading, loaded = watch.stdout.readline().split()
            assert leading == b"leading"
            time.sleep(2)  # replicas hear it announce itself
            with_watch = phase(client, replicas, args.extensions, args.writes, args.interval, "w")
        finally:
            reads = int(watch.communicate(b"", timeout=30)[0].split()[-1]) - int(loaded)
        with_watch["full_reads"] += reads  # the watch's chunked HSCAN passes
        print(
            f"baseline (no writes): lookup p50 {base['p50'] * 1e3:.2f} ms, "
            f"p99 {base['p99'] * 1e3:.2f} ms ({base['lookups']:.0f} lookups)"
        )
        for name, result in (("drop-and-reload", no_watch), ("precise (watch)", with_watch)):
            redis_ms = (result["usec"] - rate * result["lookups"]) / args.writes / 1e3
            print(
                f"{name:16s}: lookup p50 {result['p50'] * 1e3:.2f} ms, "
                f"p99 {result['p99'] * 1e3:.2f} ms (x{result['p99'] / base['p99']:.2f} baseline);"
                f" Redis {redis_ms:.1f} ms per hand write, "
                f"{result['full_reads'] / args.writes:.2f} full reads per write "
                f"({args.replicas} replicas); {result['errors']:.0f} lookups failed"
            )
        if with_watch["hscan_calls"]:
            print(
                f"the watch: {reads} chunked reads for {args.writes} hand writes, "
                f"{with_watch['hscan_calls']:.0f} HSCAN calls of "
                f"{with_watch['hscan_usec'] / with_watch['hscan_calls'] / 1e3:.2f} ms each "
                "(the longest the watch keeps Redis from other clients)"
            )
        client.close()


if __name__ == "__main__":
    main()
