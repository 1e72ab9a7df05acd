"""``make run``: both services on one machine, each on its own ports, until Ctrl-C.

Redis: the one the config names (``redis.url`` or ``REDIS_URL``); when neither names one,
a ``redis-server`` of its own on loopback (data in ``.run/redis``), never a stranger that
happens to answer on 6379. Ports: the config file, then the per-service variables
(``CTI_HTTP_LISTEN``, ``CTI_DIRECTORY_GRPC_LISTEN``, ``CTI_EVENTS_GRPC_LISTEN``,
``CTI_METRICS_LISTEN``). Once every port answers it prints where everything is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import redis

from cti import redis_client
from cti.addresses import split_address
from cti.config import ConfigError, Settings, load_settings

RUN_DIR = Path(".run")
READY_TIMEOUT = 60.0
SERVICES = ("directory_service", "event_service")
# What FreeSWITCH POSTs when phone 1000 of example.com registers (trimmed to what matters).
LOOKUP = (
    "'section=directory&tag_name=domain&key_name=name&key_value=example.com"
    "&key=id&user=1000&domain=example.com&action=sip_auth'"
)


class RunError(Exception):
    """Why ``make run`` cannot go on, in one sentence."""


def _answers(address: str) -> bool:
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _own_redis(port: int, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RunError("redis-server not found: apt-get install redis-server (or set REDIS_URL)")
    if not _free(port):  # someone else's Redis (or anything): ours goes elsewhere
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
    data = data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)]
    command += ["--notify-keyspace-events", "KEA", "--logfile", str(data / "redis.log")]
    process = subprocess.Popen(
        command,
        start_new_session=True,  # Ctrl-C reaches the services; Redis is stopped after them
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + READY_TIMEOUT
    while not _answers(f"127.0.0.1:{port}"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RunError(f"redis-server did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    return process, url


def _check_redis(url: str) -> None:
    client = redis_client.connect(url)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise RunError(
            f"the configured Redis {redis_client.redacted(url)} does not answer ({exc}); "
            "start it, or remove redis.url / REDIS_URL to let make run start its own"
        ) from None
    finally:
        client.close()


def _settings(config: str | None) -> tuple[Settings, Settings]:
    if "CTI_GRPC_LISTEN" in os.environ:
        raise RunError(
            "CTI_GRPC_LISTEN would put both services on one port; with make run use "
            "CTI_DIRECTORY_GRPC_LISTEN and CTI_EVENTS_GRPC_LISTEN"
        )
    directory = load_settings(config, service="directory")
    events = load_settings(config, service="events")
    taken = [directory.directory.http.listen, directory.directory.grpc.listen]
    for address in (events.events.grpc.listen, events.events.metrics_listen):
        if address in taken:
            raise RunError(f"{address} is configured for two listeners")
        taken.append(address)
    return directory, events


def _summary(directory: Settings, events: Settings, redis_url: str, redis_dir: Path | None) -> str:
    http = directory.directory.http
    nodes = ", ".join(node.address for node in events.events.nodes) or "none"
    redis_note = f"started for this run, data in {redis_dir}" if redis_dir else "from the config"
    ctictl = ".venv/bin/ctictl"
    if directory.directory.grpc.listen != "127.0.0.1:50051":
        ctictl += f" --address {directory.directory.grpc.listen}"
    return f"""
CTI middleware is running. Ctrl-C stops it.
  Redis                {redis_client.redacted(redis_url)} ({redis_note})
  xml_curl (HTTP)      http://{http.listen}{http.path}   <- FreeSWITCH's gateway-url
  directory gRPC API   {directory.directory.grpc.listen}
  events gRPC API      {events.events.grpc.listen}
  metrics              http://{http.listen}/metrics  and  http://{events.events.metrics_listen}/metrics
  FreeSWITCH nodes     {nodes} (event socket; retried until they answer)
Try, in another terminal:
  {ctictl} ext add 1000@example.com --password s3cret
  {ctictl} ext list --domain example.com
  curl -s http://{http.listen}{http.path} -d {LOOKUP}
"""


def _stop(
    services: list[subprocess.Popen[bytes]], redis_process: subprocess.Popen[bytes] | None
) -> NoReturn:
    """The services first, then our Redis; exit 0 when every service stopped cleanly."""
    # Once: a second Ctrl-C (or SIGTERM) while stopping must not start it over.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for child in services:
        child.terminate()
    for child in [*services, *([redis_process] if redis_process else [])]:
        if child is redis_process:
            child.terminate()
        _wait_or_kill(child)
    sys.exit(0 if all(child.returncode in (0, -signal.SIGTERM) for child in services) else 1)


def _wait_or_kill(child: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """Wait for a stopping child; one that ignores SIGTERM that long is killed (its whole
    process group, so a stuck worker of it goes too)."""
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        print(f"make run: pid {child.pid} did not stop; killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.kill()
        child.wait()


def _wait_ready(addresses: list[str], children: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(_answers(address) for address in addresses):
        if any(child.poll() is not None for child in children) or time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--config", metavar="PATH", help="cti.json (default: ./cti.json)")
    parser.add_argument(
        "--redis-port",
        type=int,
        default=6379,
        help="port of the redis-server started when none is configured (taken: any free one)",
    )
    parser.add_argument("--redis-dir", type=Path, default=RUN_DIR / "redis", help="its data folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    redis_process: subprocess.Popen[bytes] | None = None
    try:
        directory, events = _settings(args.config)
        if directory.redis_configured:
            redis_url = directory.redis_url
            _check_redis(redis_url)
        else:
            redis_process, redis_url = _own_redis(args.redis_port, args.redis_dir)
    except (ConfigError, RunError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    env = {**os.environ, "REDIS_URL": redis_url}
    config = ["--config", args.config] if args.config else []
    services = [
        # Each service leads its own process group, so one that hangs is killed whole with
        # its workers; Ctrl-C reaches it as SIGTERM from stop().
        subprocess.Popen([sys.executable, "-m", name, *config], env=env, process_group=0)
        for name in SERVICES
    ]
    children = [*services, *([redis_process] if redis_process else [])]

    def stop(*_: object) -> None:
        _stop(services, redis_process)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    listeners = [
        directory.directory.http.listen,
        directory.directory.grpc.listen,
        events.events.grpc.listen,
        events.events.metrics_listen,
    ]
    if _wait_ready(listeners, children):
        redis_dir = args.redis_dir if redis_process is not None else None
        print(_summary(directory, events, redis_url, redis_dir), flush=True)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    print("make run: a service stopped; stopping the rest", file=sys.stderr)
    stop()
    return 1


if __name__ == "__main__":
    sys.exit(main())
