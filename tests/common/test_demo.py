"""``make demo`` end to end: the real services, the simulator's replay, the Watch stream."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import REPO, free_port


def test_demo_replays_a_call_and_shows_every_change() -> None:
    env = {
        **os.environ,
        "CTI_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_DIRECTORY_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_EVENTS_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "CTI_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--exit", "--pace", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "FreeSWITCH SIMULATOR" in out
    assert '<user id="1000"><params><param name="password" value="1234"/>' in out
    order = [
        "[gRPC Watch] UPSERT registrations/1000",
        "[gRPC Watch] UPSERT calls/1000 current='0b7b74e2-c831-4fcf-b4c2-07630968a707' "
        "notify='callout'",
        "[gRPC Watch] UPSERT calls/1001 current='6c0bbabd-6dbc-475c-8e15-4bd7ecad8f53' "
        "notify='answer'",
        "[gRPC Watch] DELETE registrations/1000",
        "[gRPC Watch] DELETE registrations/1001",
    ]
    positions = [out.index(line) for line in order]
    assert positions == sorted(positions)
    last_step = out.rsplit("[simulated FreeSWITCH]", 1)[1]
    assert "1001's registration expires" in last_step
    assert "HGETALL registrations: 0 entries" in last_step
    assert "HGETALL calls: 2 entries" in last_step
