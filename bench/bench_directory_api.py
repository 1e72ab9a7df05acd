"""Directory gRPC API throughput, each beside a baseline measured in the same run.

1. ``BatchCreateExtensions`` of ``--batch`` extensions from a template in ONE call
   (validation, password generation, alias/id checks, one transaction with one bracket
   and change event per extension) vs. redis-py writing the same documents with one
   pipelined ``HSET`` (no checks, no events): the floor. Goal: <= 2 s for 10,000.
2. ``ListExtensions`` of ``--list`` extensions page by page (``--page-size``) vs. redis-py
   ``HSCAN`` of the same hash (unordered, unparsed).
3. xml_curl lookups (``python -m directory_service``, wrk, a new connection per request)
   read-only vs. while a gRPC writer updates ``--write-rate`` extensions/s through a
   second replica (on the load generator's CPU, as writes land on any replica): rate, p99
   and cache hit rate of the measured replica should stay near the read-only figures.
   Uses the helpers (and CPU pinning) of ``bench_directory_lookup.py``.

The API server runs in its own process (client and server do not share a GIL); Redis is a
throw-away ``redis-server``. All loopback. Usage:
``python bench/bench_directory_api.py [--batch 10000] [--list 100000] [--duration 5]``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import bench_directory_lookup as lookup  # noqa: E402
import grpc  # noqa: E402
import redis  # noqa: E402
from google.protobuf import field_mask_pb2  # noqa: E402

from cti import redis_keys  # noqa: E402
from cti.config import GrpcSettings, parse_settings  # noqa: E402
from cti.v1 import directory_pb2 as pb  # noqa: E402
from cti.v1 import directory_pb2_grpc  # noqa: E402
from tests.support import free_port, running_redis, wait_for_port  # noqa: E402

DOMAIN = "bench.example.com"
MAX_MESSAGE = 256 << 20


def serve(port: int, redis_url: str) -> None:
    """The API server process: ``--serve``."""
    from directory_service.app import create_grpc_server

    base = parse_settings("{}")
    settings = replace(
        base,
        redis_url=redis_url,
        directory=replace(base.directory, grpc=GrpcSettings(f"127.0.0.1:{port}")),
    )
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    server = create_grpc_server(settings, options=options)
    server.start()
    server.wait_for_termination()


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def row(what: str, count: int, ours: float, baseline: float, baseline_name: str) -> None:
    print(
        f"{what:<36} {ours:7.3f} s {count / ours:>10,.0f}/s   {baseline_name:<26} "
        f"{baseline:7.3f} s   ours/baseline {ours / baseline:6.1f}x"
    )


def batch_range(stub: Any, domain: str, first: int, count: int) -> Any:
    request = pb.BatchCreateExtensionsRequest(
        parent=f"domains/{domain}",
        range=pb.ExtensionRange(
            first=str(first),
            last=str(first + count - 1),
            prototype=pb.Extension(template="agents", variables={"callgroup": "sales"}),
        ),
    )
    return stub.BatchCreateExtensions(request, timeout=600)


def bench_batch(stub: Any, client: redis.Redis, count: int) -> None:
    client.flushall()
    stub.CreateExtensionTemplate(
        pb.CreateExtensionTemplateRequest(
            extension_template_id="agents",
            extension_template=pb.ExtensionTemplate(
                variables={"sip-force-contact": "NDLB-connectile-dysfunction-2.0"},
                attributes={"cacheable": "60000"},
            ),
        )
    )
    result: list[Any] = []
    ours = timed(lambda: result.append(batch_range(stub, DOMAIN, 100000, count)))
    assert len(result[0].extensions) == count
    assert client.hlen(redis_keys.extensions(DOMAIN)) == count
    documents = client.hgetall(redis_keys.extensions(DOMAIN))

    def raw() -> None:
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(redis_keys.extensions("raw.example.com"), mapping=documents)  # type: ignore[arg-type]
            pipe.execute()

    row(f"BatchCreate {count:,} (1 call)", count, ours, timed(raw), "raw pipelined HSET")
    goal = 2.0 * count / 10000
    print(f"{'':<36} goal <= {goal:.1f} s: {'met' if ours <= goal else 'NOT met'}")


def bench_list(stub: Any, client: redis.Redis, count: int, page_size: int) -> None:
    client.flushall()
    stub.CreateExtensionTemplate(pb.CreateExtensionTemplateRequest(extension_template_id="agents"))
    for first in range(0, count, 10000):
        batch_range(stub, DOMAIN, 1000000 + first, min(10000, count - first))
    key = redis_keys.extensions(DOMAIN)
    assert client.hlen(key) == count

    def list_all() -> None:
        seen, token = 0, ""
        while True:
            response = stub.ListExtensions(
                pb.ListExtensionsRequest(
                    parent=f"domains/{DOMAIN}", page_size=page_size, page_token=token
                ),
                timeout=60,
            )
            seen += len(response.extensions)
            token = response.next_page_token
            if not token:
                break
        assert seen == count, seen

    def raw() -> None:
        seen = sum(1 for _ in client.hscan_iter(key, count=page_size))
        assert seen >= count

    row(f"List {count:,} (pages of {page_size})", count, timed(list_all), timed(raw), "raw HSCAN")


# ---------------------------------------------------------------------------------------
# Lookups while writing


def cache_counts(http_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cti_directory_cache_lookups_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


def hit_rate(before: dict[str, float], after: dict[str, float]) -> float:
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    total = sum(delta.values())
    return delta.get("hit", 0.0) / total if total else 0.0


class Writer(threading.Thread):
    """Updates random extensions over gRPC at ``rate`` per second until stopped."""

    def __init__(self, stub: Any, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.stub, self.count, self.rate = stub, count, rate
        self.stop_event = threading.Event()
        self.done = 0

    def run(self) -> None:
        rng = random.Random(3)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            user = lookup.FIRST_USER + rng.randrange(self.count)
            self.stub.UpdateExtension(
                pb.UpdateExtensionRequest(
                    extension=pb.Extension(
                        name=f"domains/{lookup.DOMAIN}/extensions/{user}",
                        variables={"bench_seq": str(self.done)},
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["variables.bench_seq"]),
                ),
                timeout=10,
            )
            self.done += 1
            next_at += interval
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))


def bench_lookups_under_writes(redis_url: str, count: int, seconds: float, rate: float) -> None:
    if any(shutil.which(tool) is None for tool in ("wrk", "taskset")):
        print("lookups under writes: skipped (wrk/taskset not installed)")
        return
    redis.Redis.from_url(redis_url).flushall()
    workdir = Path(tempfile.mkdtemp(prefix="cti-bench-api-"))
    script = lookup.lua_script(workdir, count)
    lookup.seed(redis_url, count)
    http_port, grpc_port = free_port(), free_port()
    writer_http_port, writer_grpc_port = free_port(), free_port()
    (workdir / "none.json").write_text("{}")

    def replica_env(http: int, grpc_listen: int) -> dict[str, str]:
        return {
            "REDIS_URL": redis_url,
            "CTI_HTTP_LISTEN": f"127.0.0.1:{http}",
            "CTI_GRPC_LISTEN": f"127.0.0.1:{grpc_listen}",
            "CTI_CONFIG": str(workdir / "none.json"),
        }

    # Two replicas, as deployed: the writer's API calls land on one (on the load
    # generator's CPU), the measured one (pinned alone) only hears of them through Redis.
    command = [sys.executable, "-m", "directory_service"]
    with (
        lookup.server(command, http_port, replica_env(http_port, grpc_port)),
        lookup.server(
            command,
            writer_http_port,
            replica_env(writer_http_port, writer_grpc_port),
            cpu=lookup.CLIENT_CPU,
        ),
    ):
        channel = grpc.insecure_channel(f"127.0.0.1:{writer_grpc_port}")
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        lookup.wrk(http_port, script, max(1.0, seconds / 3), lookup.CONNECTIONS)  # warm cache

        def run(label: str, writing: bool, delay_ms: int = 0) -> tuple[str, Any, float, int]:
            writer = Writer(stub, count, rate)
            before = cache_counts(http_port)
            if writing:
                writer.start()
            connections = lookup.RATE_CONNECTIONS if delay_ms else lookup.CONNECTIONS
            result = lookup.measure(label, http_port, script, seconds, connections, delay_ms)
            writer.stop_event.set()
            if writing:
                writer.join(10)
            return label, result, hit_rate(before, cache_counts(http_port)), writer.done

        quiet_max = run("max, read-only", False)
        busy_max = run(f"max, writing {rate:.0f}/s", True)
        delay = max(1, round(lookup.RATE_CONNECTIONS * 1000 / (quiet_max[1].rps / 2)))
        offered = lookup.RATE_CONNECTIONS * 1000 / delay
        quiet_half = run(f"~{offered:.0f}/s, read-only", False, delay)
        busy_half = run(f"~{offered:.0f}/s, writing", True, delay)
        channel.close()
    shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"xml_curl lookups, {count:,} extensions, a new connection per request, "
        f"{seconds:.0f} s each (offered ~{offered:.0f}/s = half the read-only max):"
    )
    print(f"  {'':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'hit rate':>9} {'writes':>7}")
    for label, result, hits, writes in (quiet_max, busy_max, quiet_half, busy_half):
        print(
            f"  {label:<26} {result.rps:>9.0f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f} "
            f"{hits:>9.1%} {writes:>7}"
        )
    print(
        f"  writing / read-only: max rate {busy_max[1].rps / quiet_max[1].rps:.0%}; at half "
        f"load p99 {busy_half[1].p99_ms / quiet_half[1].p99_ms:.2f}x, "
        f"hit rate {busy_half[2] - quiet_half[2]:+.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10000)
    parser.add_argument("--list", type=int, default=100000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--lookup-extensions", type=int, default=10000)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--write-rate", type=float, default=100.0)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return
    with running_redis("--notify-keyspace-events", "KEA") as redis_server:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), redis_server.url], cwd=REPO
        )
        try:
            wait_for_port(port)
            options = [("grpc.max_receive_message_length", MAX_MESSAGE)]
            channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
            stub = directory_pb2_grpc.DirectoryServiceStub(channel)
            client = redis.Redis.from_url(redis_server.url)
            bench_batch(stub, client, args.batch)
            bench_list(stub, client, args.list, args.page_size)
            channel.close()
            client.close()
        finally:
            server.terminate()
            server.wait(10)
        if args.duration > 0:
            bench_lookups_under_writes(
                redis_server.url, args.lookup_extensions, args.duration, args.write_rate
            )


if __name__ == "__main__":
    main()
