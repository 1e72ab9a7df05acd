"""xml_curl directory lookups per second, as FreeSWITCH sends them.

The captured ``sip_auth`` REGISTER body (fixture 03) with a random user of 10,000
extensions per request, a new TCP connection per request (``Connection: close``, as
mod_xml_curl does), the server pinned to CPU 0 and wrk (1 thread) plus Redis on CPU 1.
Three servers, measured in the same run:

- (a) nginx (Debian) answering a fixed directory document: the ceiling;
- (b) Flask + redis-py (HGET + string template) under gunicorn, 1 sync worker: what a user
  would write instead (``bench/flask_directory_baseline.py``);
- ``python -m directory_service`` (granian, 1 worker, cache on).

Then our p99 at half of our maximum rate. wrk has no rate control (wrk2 is not in Debian):
the Lua script's ``delay()`` makes every connection wait ``connections / rate`` between
requests, an approximately constant offered rate; the achieved rate is printed beside it.
wrk's latency is measured from writing the request to the last response byte (the TCP
connect before it is not included).

Usage: ``python bench/bench_directory_lookup.py [--duration 5] [--extensions 10000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from cti.directory_entry import parse_entry  # noqa: E402
from directory_service.lookup import render  # noqa: E402
from tests.support import free_port, running_redis, wait_for_port, xml_curl_fixture  # noqa: E402

DOMAIN = "127.0.0.1"
FIRST_USER = 1000
USER_PLACEHOLDER = "@@U@@"
SERVER_CPU, CLIENT_CPU = "0", "1"
CONNECTIONS = 16
RATE_CONNECTIONS = 64

LUA = r"""
local template = [[%(template)s]]
local first, count = %(first)d, %(count)d
local headers = {["Content-Type"] = "application/x-www-form-urlencoded",
                 ["Connection"] = "close", ["User-Agent"] = "freeswitch-xml/1.0"}
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
math.randomseed(os.time() + math.floor(os.clock() * 1000000))

request = function()
  local body = (template:gsub("%(placeholder)s", tostring(first + math.random(0, count - 1))))
  return wrk.format("POST", "/directory", headers, body)
end

if delay_ms > 0 then
  delay = function() return delay_ms end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,'
    .. '"errors":%%d,"non2xx":%%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non2xx: int

    def row(self) -> str:
        flags = (
            f"  ({self.errors} socket errors, {self.non2xx} non-2xx)"
            if self.errors or self.non2xx
            else ""
        )
        return f"{self.name:<34} {self.rps:>10.0f} {self.p50_ms:>9.2f} {self.p99_ms:>9.2f}{flags}"


def pinned(cpu: str, command: Sequence[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if (os.cpu_count() or 1) > 1 else list(command)


def extension(user: int, rng: random.Random) -> str:
    return json.dumps(
        {
            "param": {"password": f"{rng.randrange(10**8):08d}", "vm-password": str(user)},
            "variable": {
                "user_context": "default",
                "effective_caller_id_name": f"Extension {user}",
                "callgroup": "agents",
            },
            "attribute": {"cacheable": "60000"},
        }
    )


def seed(url: str, count: int) -> str:
    """Store ``count`` extensions; return the one of FIRST_USER (for nginx's document)."""
    rng = random.Random(7)
    client = redis.Redis.from_url(url)
    values = {str(FIRST_USER + i): extension(FIRST_USER + i, rng) for i in range(count)}
    client.delete(f"cti_exten@{DOMAIN}")
    for start in range(0, count, 1000):
        chunk = dict(list(values.items())[start : start + 1000])
        client.hset(f"cti_exten@{DOMAIN}", mapping=chunk)  # type: ignore[arg-type]
    client.close()
    return values[str(FIRST_USER)]


def lua_script(workdir: Path, count: int) -> Path:
    _, body = xml_curl_fixture("03")
    template = body.decode()
    for field in ("sip_auth_username", "sip_contact_user", "sip_to_user", "sip_from_user", "user"):
        template = template.replace(f"&{field}=1000&", f"&{field}={USER_PLACEHOLDER}&")
    assert template.count(USER_PLACEHOLDER) == 5, "fixture 03 changed shape"
    path = workdir / "xml_curl.lua"
    path.write_text(
        LUA
        % {
            "template": template,
            "first": FIRST_USER,
            "count": count,
            "placeholder": USER_PLACEHOLDER,
        }
    )
    return path


def wrk(
    port: int, script: Path, seconds: float, connections: int, delay_ms: int = 0
) -> dict[str, int]:
    command = pinned(
        CLIENT_CPU,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/directory",
        ],
    )
    env = {**os.environ, "BENCH_DELAY_MS": str(delay_ms)}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 30)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, int] = json.loads(line.removeprefix("BENCH_JSON "))
            return result
    raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")


def measure(
    name: str,
    port: int,
    script: Path,
    seconds: float,
    connections: int = CONNECTIONS,
    delay_ms: int = 0,
) -> Result:
    raw = wrk(port, script, seconds, connections, delay_ms)
    return Result(
        name,
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=raw["errors"],
        non2xx=raw["non2xx"],
    )


@contextmanager
def server(
    command: Sequence[str], port: int, env: dict[str, str] | None = None, cpu: str = SERVER_CPU
) -> Iterator[None]:
    process = subprocess.Popen(
        pinned(cpu, command),
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=30)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def nginx_config(workdir: Path, port: int, document: bytes) -> Path:
    text = document.decode().replace("\\", "\\\\").replace("'", "\\'")
    path = workdir / "nginx.conf"
    path.write_text(
        f"""
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /directory {{ default_type text/xml; return 200 '{text}'; }}
    }}
}}
"""
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--extensions", type=int, default=10000)
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (apt-get install wrk nginx util-linux)", file=sys.stderr)
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="cti-bench-"))
    script = lua_script(workdir, args.extensions)
    warmup = max(2.0, args.duration / 2)  # ours renders each of the users once, then hits
    results: list[Result] = []
    venv_bin = Path(sys.executable).parent
    with running_redis() as redis_server:
        subprocess.run(
            ["taskset", "-pc", CLIENT_CPU, str(redis_server.process.pid)],  # type: ignore[union-attr]
            capture_output=True,
            check=False,
        )
        first = seed(redis_server.url, args.extensions)
        document = render.user_document(
            DOMAIN, parse_entry("{}"), str(FIRST_USER), parse_entry(first)
        )

        port = free_port()
        with server(
            [
                "nginx",
                "-p",
                str(workdir),
                "-c",
                str(nginx_config(workdir, port, document)),
                "-g",
                "daemon off;",
            ],
            port,
        ):
            wrk(port, script, warmup, CONNECTIONS)
            results.append(measure("(a) nginx, fixed document", port, script, args.duration))

        port = free_port()
        with server(
            [
                str(venv_bin / "gunicorn"),
                "-w",
                "1",
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "bench.flask_directory_baseline:app",
            ],
            port,
            {"REDIS_URL": redis_server.url},
        ):
            wrk(port, script, warmup, CONNECTIONS)
            results.append(measure("(b) Flask + redis-py, gunicorn", port, script, args.duration))

        port, grpc_port = free_port(), free_port()
        env = {
            "REDIS_URL": redis_server.url,
            "CTI_HTTP_LISTEN": f"127.0.0.1:{port}",
            "CTI_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
            "CTI_CONFIG": str(workdir / "none.json"),
        }
        (workdir / "none.json").write_text("{}")
        with server([sys.executable, "-m", "directory_service"], port, env):
            wrk(port, script, warmup, CONNECTIONS)  # also fills the cache
            ours = measure("directory_service (granian)", port, script, args.duration)
            results.append(ours)
            half = ours.rps / 2
            delay = max(1, round(RATE_CONNECTIONS * 1000 / half))
            at_half = measure(
                f"  ... offered ~{RATE_CONNECTIONS * 1000 / delay:.0f}/s (half max)",
                port,
                script,
                args.duration,
                RATE_CONNECTIONS,
                delay,
            )
    shutil.rmtree(workdir, ignore_errors=True)

    nginx, flask = results[0], results[1]
    print(
        f"{args.extensions} extensions, sip_auth bodies with random users, "
        "a new connection per request"
    )
    print(
        f"server on CPU {SERVER_CPU}, wrk -t1 -c{CONNECTIONS} and Redis on CPU {CLIENT_CPU}, "
        f"{args.duration:.0f} s each"
    )
    print(f"{'server':<34} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    for result in [*results, at_half]:
        print(result.row())
    print(f"ours / nginx  = {ours.rps / nginx.rps:.0%}   (goal >= 40%)")
    print(f"ours / flask  = {ours.rps / flask.rps:.1f}x   (goal >= 4x)")
    print(
        f"p99 at half max rate ({at_half.rps:.0f} req/s achieved) = {at_half.p99_ms:.2f} ms"
        "   (goal <= 5 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
