"""Real Redis Cluster and Sentinel topologies on loopback, from Debian's ``redis-server``.

Each process gets its own temporary directory and free port; everything is torn down by
the context managers, so a failed test leaves nothing running.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import redis

from cti.redis_client import with_password
from tests.support import free_port, wait_for_port

MASTER_NAME = "cti-master"
# Production-like: the servers and the sentinels each require a password, with characters
# that must be percent-encoded in a URL.
SERVER_PASSWORD = "srv:p@ss/w%rd,1"
SENTINEL_PASSWORD = "sen#tinel?2"


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    return binary


def poll(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``check()`` is true (exceptions count as not yet), or fail saying what."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


@contextmanager
def _process(args: list[str], port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (workdir / f"{port}.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_for_port(port)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _server_args(port: int, workdir: Path, *extra: str) -> list[str]:
    return [
        _redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--dbfilename",
        f"dump-{port}.rdb",
        "--notify-keyspace-events",
        "KEA",
        *extra,
    ]


_clients: dict[int, redis.Redis] = {}


def _cluster_ok(port: int) -> bool:
    return bool(client(port).cluster("info")["cluster_state"] == "ok")


def client(port: int, password: str | None = None) -> redis.Redis:
    """A plain client to one process (kept per port and closed at topology teardown)."""
    if port not in _clients:
        _clients[port] = redis.Redis(
            host="127.0.0.1", port=port, password=password, socket_timeout=5, decode_responses=True
        )
    return _clients[port]


def _close_clients(ports: tuple[int, ...]) -> None:
    for port in ports:
        found = _clients.pop(port, None)
        if found is not None:
            found.close()


@dataclass(frozen=True)
class Cluster:
    ports: tuple[int, ...]

    @property
    def url(self) -> str:
        """Only one seed node: the client must discover the others itself."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"


@contextmanager
def redis_cluster(masters: int = 3, replicas: int = 0) -> Iterator[Cluster]:
    """``masters`` cluster-enabled servers (each with ``replicas`` replicas) joined by
    ``redis-cli --cluster create``."""
    workdir = Path(tempfile.mkdtemp(prefix="cti-cluster-"))
    ports = tuple(free_port() for _ in range(masters * (1 + replicas)))
    try:
        with ExitStack() as stack:
            for port in ports:
                node_dir = workdir / str(port)
                node_dir.mkdir()
                args = _server_args(
                    port,
                    node_dir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "2000",
                )
                stack.enter_context(_process(args, port, node_dir))
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{p}" for p in ports),
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            for port in ports:
                poll(f"cluster_state:ok on {port}", partial(_cluster_ok, port))
            yield Cluster(ports)
    finally:
        _close_clients(ports)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class SentinelSetup:
    server_ports: tuple[int, int]
    sentinel_ports: tuple[int, ...]

    @property
    def url(self) -> str:
        """With both passwords in it, percent-encoded."""
        return with_password(self.url_without_server_password, SERVER_PASSWORD)

    @property
    def url_without_server_password(self) -> str:
        """For ``REDIS_PASSWORD`` to complete (the sentinels' own password stays)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        query = urlencode({"sentinel_password": SENTINEL_PASSWORD})
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0?{query}"

    def sentinel(self, index: int = 0) -> redis.Redis:
        return client(self.sentinel_ports[index], SENTINEL_PASSWORD)

    def server(self, port: int) -> redis.Redis:
        return client(port, SERVER_PASSWORD)

    def master_port(self, index: int = 0) -> int:
        """The master's port as one sentinel currently names it."""
        answer = self.sentinel(index).sentinel_get_master_addr_by_name(MASTER_NAME)
        assert isinstance(answer, tuple | list), answer
        return int(answer[1])

    def wait_settled(self) -> None:
        """Every sentinel agrees on the master, which says so, and it has a synced replica
        that the sentinels know (else SENTINEL FAILOVER answers NOGOODSLAVE)."""
        master = self.master_port()
        poll(
            "sentinels to agree on the master",
            lambda: all(self.master_port(i) == master for i in range(len(self.sentinel_ports))),
        )
        replica = next(p for p in self.server_ports if p != master)
        poll(
            f"{master} to be master",
            lambda: self.server(master).info("replication")["role"] == "master",
        )
        poll(
            f"{replica} to replicate {master}",
            lambda: (
                self.server(replica).info("replication").get("master_link_status") == "up"
                and int(self.server(replica).info("replication")["master_port"]) == master
            ),
        )
        poll(
            "sentinels to know the replica",
            lambda: all(
                any(
                    int(r["port"]) == replica and "s_down" not in r["flags"]
                    for r in self.sentinel(i).sentinel_slaves(MASTER_NAME)
                )
                for i in range(len(self.sentinel_ports))
            ),
        )

    def failover(self) -> int:
        """Start a ``SENTINEL FAILOVER`` and return the port of the master it replaces."""
        old = self.master_port()

        def started() -> bool:
            return bool(self.sentinel().sentinel_failover(MASTER_NAME))

        poll("SENTINEL FAILOVER to be accepted", started)
        return old


@contextmanager
def redis_sentinel(sentinels: int = 3) -> Iterator[SentinelSetup]:
    """One master, one replica and ``sentinels`` sentinels (quorum 2) on loopback."""
    workdir = Path(tempfile.mkdtemp(prefix="cti-sentinel-"))
    master, replica = free_port(), free_port()
    sentinel_ports = tuple(free_port() for _ in range(sentinels))
    try:
        with ExitStack() as stack:
            auth = ("--requirepass", SERVER_PASSWORD, "--masterauth", SERVER_PASSWORD)
            master_args = _server_args(master, workdir, *auth)
            stack.enter_context(_process(master_args, master, workdir))
            replica_args = _server_args(
                replica, workdir, *auth, "--replicaof", "127.0.0.1", str(master)
            )
            stack.enter_context(_process(replica_args, replica, workdir))
            for port in sentinel_ports:
                conf = workdir / f"sentinel-{port}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} 2000\n"
                    f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                    f"sentinel auth-pass {MASTER_NAME} {SERVER_PASSWORD}\n"
                    f"requirepass {SENTINEL_PASSWORD}\n"
                    f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
                )
                args = [_redis_server(), str(conf), "--sentinel"]
                stack.enter_context(_process(args, port, workdir))
            setup = SentinelSetup((master, replica), sentinel_ports)
            setup.wait_settled()
            yield setup
    finally:
        _close_clients((master, replica, *sentinel_ports))
        shutil.rmtree(workdir, ignore_errors=True)
