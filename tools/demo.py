"""``make demo``: the real services against a SIMULATED FreeSWITCH, for a first look without one.

The simulator is the test suite's fake event socket (``tests/eslserver.py``): it speaks
mod_event_socket's protocol and replays, step by step, the events a real FreeSWITCH 1.10
sent when two phones registered, called each other and hung up
(``tests/fixtures/freeswitch/esl/``). Everything else is real: ``make run``'s Redis and
both services, the xml_curl lookup FreeSWITCH makes, the ``registrations`` and ``calls``
hashes, and a gRPC ``Watch`` stream printed as it changes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import redis

from cti.addresses import split_address
from cti.config import Settings, load_settings
from cti.v1 import events_pb2, events_pb2_grpc
from tests.eslserver import FakeFreeSwitch, fixture_frames
from tests.support import REPO, xml_curl_fixture

SIM = "[simulated FreeSWITCH]"
STEPS = [  # (what a real FreeSWITCH did, which captured frames it sent: 1-based)
    ("phone 1000 registers", [1]),
    ("phone 1001 registers", [2]),
    ("1000 calls 1001: both legs ring", [3, 4]),
    ("1001 answers", [5, 6]),
    ("1000 hangs up", [7, 8]),
    ("phone 1000 unregisters", [9]),
    ("phone 1001 re-registers for 5 s", [10]),
    ("1001's registration expires", [11]),
]


def say(text: str) -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DemoFailed(Exception):
    """Why the demo stopped, in one sentence."""


def wait_until(
    condition: Callable[[], object],
    what: str,
    services: subprocess.Popen[bytes],
    timeout: float = 60.0,
) -> None:
    """Wait for ``condition``; stop at once if the services stopped (a taken port, say:
    their own line above says why), else after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if services.poll() is not None:
            raise DemoFailed("the services stopped (their error is above)")
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


def answers(address: str) -> bool:
    try:
        with socket.create_connection(split_address(address), timeout=0.3):
            return True
    except OSError:
        return False


class WatchPrinter(threading.Thread):
    """Follows the event service's Watch stream and prints every change."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(address)
        self.changes = 0
        self.live = threading.Event()  # the snapshot is complete: changes follow

    def run(self) -> None:
        stub = events_pb2_grpc.EventServiceStub(self.channel)
        try:
            for response in stub.Watch(events_pb2.WatchRequest()):
                for event in response.events:
                    self._print(event)
        except grpc.RpcError:
            return  # the demo is over

    def _print(self, event: events_pb2.WatchEvent) -> None:
        kind = events_pb2.WatchEvent.Type.Name(event.type).removeprefix("TYPE_")
        if event.type == events_pb2.WatchEvent.TYPE_SNAPSHOT_COMPLETE:
            say("  [gRPC Watch] snapshot complete; changes follow")
            self.live.set()
            return
        detail = ""
        if event.HasField("registration"):
            reg = event.registration
            detail = f"status={reg.status!r} contact={reg.contact!r}"
        elif event.HasField("extension_calls"):
            calls = event.extension_calls
            detail = f"current={calls.current!r} notify={calls.notify!r}"
        say(f"  [gRPC Watch] {kind} {event.name} {detail}".rstrip())
        if event.type != events_pb2.WatchEvent.TYPE_SNAPSHOT:
            self.changes += 1


def show_hashes(client: redis.Redis) -> None:
    for name in ("registrations", "calls"):
        entries: dict[bytes, bytes] = client.hgetall(name)  # type: ignore[assignment]
        say(f"  [Redis] HGETALL {name}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
        for field, value in sorted(entries.items()):
            text = value.decode()
            limit = 100 if name == "registrations" else 400
            say(f"      {field.decode()} = {text[:limit]}{' ...' if len(text) > limit else ''}")


def lookup(settings: Settings) -> None:
    """The exact POST FreeSWITCH made when phone 1000 registered (captured)."""
    http = settings.directory.http
    _, body = xml_curl_fixture("03")
    request = urllib.request.Request(f"http://{http.listen}{http.path}", data=body)
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer = reply.read().decode()
    say(f"  POST http://{http.listen}{http.path} (FreeSWITCH's sip_auth for 1000) ->")
    for line in answer.splitlines():
        say(f"    {line}")


def provision(settings: Settings) -> None:
    ctictl = [sys.executable, "-m", "ctictl", "--address", settings.directory.grpc.listen]
    for extension in ("1000", "1001"):
        command = [*ctictl, "ext", "add", f"{extension}@127.0.0.1", "--password", "1234"]
        say(f"  $ ctictl ext add {extension}@127.0.0.1 --password 1234")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 and "ALREADY_EXISTS" not in done.stderr + done.stdout:
            raise SystemExit(f"demo: ctictl failed: {done.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--pace", type=float, default=2.0, help="seconds between steps")
    parser.add_argument("--exit", action="store_true", help="stop after the replay")
    args = parser.parse_args(argv)

    simulator = FakeFreeSwitch().start()
    workdir = Path(tempfile.mkdtemp(prefix="cti-demo-"))
    config = workdir / "cti.json"
    # The shipped call fields; no periodic reconcile (the simulator keeps no tables).
    fields = ["Caller-Destination-Number", "Caller-Caller-ID-Number", "Caller-Callee-ID-Number"]
    document = {"events": {"reconcile_interval": 0}, "gui": {"call": {"fields": fields}}}
    config.write_text(json.dumps(document))
    redis_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CTI_GRPC_LISTEN")}
    env.update(CTI_ESL_NODES=simulator.address, CTI_ESL_PASSWORD=simulator.password)
    env.setdefault("CTI_LOG_LEVEL", "WARNING")  # the demo's own output is the story
    directory = load_settings(config, env=env, service="directory")
    events = load_settings(config, env=env, service="events")

    say(f"{SIM} This demo uses a FreeSWITCH SIMULATOR on {simulator.address}: it replays")
    say(f"{SIM} events captured from a real FreeSWITCH 1.10. No phone or call is real.")
    run = [sys.executable, "-m", "cti.devrun", "--config", str(config)]
    run += ["--redis-port", str(redis_port), "--redis-dir", str(workdir / "redis")]
    services = subprocess.Popen(run, cwd=REPO, env=env)
    try:
        wait_until(simulator.subscribed_clients, "the event service's connection", services)
        wait_until(lambda: answers(events.events.grpc.listen), "the event API", services)
        wait_until(lambda: answers(directory.directory.http.listen), "xml_curl", services)
        client = redis.Redis(port=redis_port)
        say("\n1. Provision the two phones FreeSWITCH will ask about (directory gRPC API):")
        provision(directory)
        say("\n2. The lookup FreeSWITCH makes when a phone registers, and its answer:")
        lookup(directory)
        say("\n3. Follow the event service's Watch stream while the simulator replays:")
        watch = WatchPrinter(events.events.grpc.listen)
        watch.start()
        wait_until(watch.live.is_set, "the Watch snapshot", services)
        frames = fixture_frames()
        for title, numbers in STEPS:
            time.sleep(args.pace)
            before = watch.changes
            say(f"\n{SIM} {title}")
            simulator.send_frames([frames[n - 1] for n in numbers])
            changed = functools.partial(lambda since: watch.changes > since, before)
            wait_until(changed, f"a change for '{title}'", services)
            time.sleep(0.3)  # let the step's other changes print before the hashes
            show_hashes(client)
        if not args.exit:
            say("\nDone. The services keep running: try ctictl, /metrics, and")
            say(f"redis-cli -p {redis_port} HGETALL registrations. Ctrl-C stops everything.")
            services.wait()
    except DemoFailed as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        services.terminate()
        services.wait(timeout=60)
        simulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
