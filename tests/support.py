"""Test infrastructure shared by every test module: real redis-server, fixture files."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote_plus

import redis

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
XML_CURL_DIR = FIXTURES / "freeswitch" / "xml_curl"
ESL_DIR = FIXTURES / "freeswitch" / "esl"
SEED_DIR = FIXTURES / "seed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers on {host}:{port}") from None
            time.sleep(0.02)


class RedisServer:
    """A throw-away ``redis-server`` on a free loopback port; can be stopped and restarted
    on the same port to test outages."""

    def __init__(self, extra_args: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cti-redis-")
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def cli(self, *args: str) -> str:
        """Run ``redis-cli`` as an operator would (a write that bypasses our API)."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], check=True, capture_output=True
        )
        return out.stdout.decode()


def reset_redis(server: RedisServer) -> None:
    """The shared server as each test wants it: running (a test may have stopped it to
    simulate an outage), empty, keyspace notifications on."""
    if server.process is None:
        server.start()
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.config_set("notify-keyspace-events", "KEA")
    client.close()


@contextmanager
def running_redis(*extra_args: str) -> Iterator[RedisServer]:
    server = RedisServer(extra_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


def xml_curl_fixture(name_prefix: str) -> tuple[str, bytes]:
    """(file name, raw urlencoded body) of a captured mod_xml_curl request."""
    (path,) = sorted(XML_CURL_DIR.glob(f"{name_prefix}*.txt"))
    lines = path.read_text().splitlines()
    body = lines[lines.index("# raw body:") + 1]
    return path.name, body.encode()


def xml_curl_fixtures() -> list[tuple[str, bytes]]:
    return [xml_curl_fixture(p.name[:2]) for p in sorted(XML_CURL_DIR.glob("*.txt"))]


def decode_form(body: bytes) -> list[tuple[str, str]]:
    """What a form body says, in order, duplicates kept (the reference for tests)."""
    pairs = []
    for part in body.decode().split("&"):
        name, _, value = part.partition("=")
        pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs
