"""Reconcile beside the live stream: events keep being applied while FreeSWITCH's tables
are read, unknown channels are dumped over several connections at once, and a channel a
live event changed meanwhile is left as the event made it."""

from __future__ import annotations

import json
import threading

import redis

from cti import redis_keys
from cti.config import EslNode
from event_service.ingest.worker import NodeWorker
from tests.eslserver import FakeFreeSwitch, call_events, stamped
from tests.events.helpers import settings, until

UNKNOWN = 500


class GatedDumps:
    """``uuid_dump`` answers that wait for the test's go, counting how many wait at once."""

    def __init__(self, dumps: dict[str, dict[str, str]]) -> None:
        self.dumps = dumps
        self.go = threading.Event()
        self.lock = threading.Lock()
        self.waiting = 0
        self.most_at_once = 0

    def __call__(self, command: str) -> str:
        with self.lock:
            self.waiting += 1
            self.most_at_once = max(self.most_at_once, self.waiting)
        self.go.wait(30)
        with self.lock:
            self.waiting -= 1
        headers = self.dumps.get(command.split()[1])
        if headers is None:
            return "-ERR No such channel!\n"
        return "".join(f"{n}: {v}\n" for n, v in headers.items())


def test_unknown_channels_are_dumped_concurrently_while_events_flow(
    fs: FakeFreeSwitch, client: redis.Redis, redis_url: str
) -> None:
    """500 channels of extension 2000 FreeSWITCH has and Redis does not; meanwhile 1000
    places calls, and one of the 500 hangs up (its live hangup must win)."""
    creates = {f"{n:08d}-0000-4000-8000-000000000000": n for n in range(UNKNOWN)}
    dumps = {}
    for uuid in creates:
        answer = call_events(uuid, "2000")[1]
        dumps[uuid] = {k: v.replace("\n", " ") for k, v in answer.items()}
        dumps[uuid]["Event-Name"] = "CHANNEL_DATA"
    gate = GatedDumps(dumps)
    fs.set_state(
        channels=[{"uuid": uuid, "callstate": "ACTIVE"} for uuid in creates],
    )
    fs.api_replies["uuid_dump"] = gate
    ended = next(iter(creates))
    stop = threading.Event()
    connection = redis.Redis.from_url(redis_url)
    node = EslNode("127.0.0.1", fs.port)
    running = NodeWorker(node, settings((node,)), connection, "replica-a", stop)
    running.start()
    try:
        fs.wait_subscribed()
        until(lambda: gate.waiting > 0, what="reconcile dumping")
        # the reconcile is stuck in uuid_dump: live events are applied all the same
        live = [call_events(f"live-{n}", "1000") for n in range(5)]
        fs.send_events([stamped(e) for call in live for e in call[:2]])
        _, _, hangup = call_events(ended, "2000")
        fs.send_events([stamped(hangup)])

        def live_calls(key: str) -> list[str]:
            return list(json.loads(client.hget("calls", key) or "{}").get("activity", []))

        until(lambda: len(live_calls("1000")) == 5, what="live events applied mid-reconcile")
        assert running.reconciles == 0
        gate.go.set()
        until(lambda: running.reconciles == 1, timeout=30, what="reconcile merged")
        assert len(live_calls("2000")) == UNKNOWN - 1
        assert ended not in live_calls("2000")  # the live hangup is newer than the table
        assert not client.hexists(redis_keys.call_channels("calls"), ended)
        assert gate.most_at_once > 1  # several uuid_dumps in flight at once
        # connected is set just after the merge counted: wait, do not race it
        until(running.connected.is_set, what="connected once the first reconcile merged")
    finally:
        stop.set()
        running.join(timeout=10)
        connection.close()
