"""``make run``: both services on local defaults, with a local redis-server if needed.

If ``REDIS_URL`` is unset and nothing answers on 127.0.0.1:6379, starts Debian's
``redis-server`` on loopback (data in ``.run/redis``). Ctrl-C or SIGTERM stops everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RUN_DIR = Path(".run")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _start_redis() -> subprocess.Popen[bytes] | None:
    if os.environ.get("REDIS_URL") or _port_open("127.0.0.1", 6379):
        return None
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: apt-get install redis-server (or set REDIS_URL)")
    data = RUN_DIR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--dir",
            str(data),
            "--notify-keyspace-events",
            "KEA",
        ],
        start_new_session=True,  # Ctrl-C reaches the services; Redis is stopped after them
    )
    for _ in range(100):
        if _port_open("127.0.0.1", 6379):
            return process
        time.sleep(0.05)
    sys.exit("redis-server did not start")


def main() -> None:
    redis_process = _start_redis()
    services = [
        subprocess.Popen([sys.executable, "-m", name, *sys.argv[1:]])
        for name in ("directory_service", "event_service")
    ]
    children = [*services, *([redis_process] if redis_process else [])]

    def stop(*_: object) -> None:
        for child in services:
            child.terminate()
        for child in services:
            child.wait(timeout=15)
        if redis_process:
            redis_process.terminate()
            redis_process.wait(timeout=15)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    stop()


if __name__ == "__main__":
    main()
