"""Running ``ctictl`` as operators run it: the installed script in a subprocess, not on a
terminal (stdout and stderr are pipes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.directory.grpc_fixtures import TOKEN, Api

CTICTL = Path(sys.executable).parent / "ctictl"


def run_ctictl(
    address: str,
    *args: str,
    token: str = TOKEN,
    columns: int = 200,
    address_variable: str = "CTI_API_ADDRESS",
) -> subprocess.CompletedProcess[str]:
    """``address`` goes into ``address_variable`` (``CTI_EVENTS_ADDRESS`` for ``call``)."""
    env = {
        **os.environ,
        address_variable: address,
        "CTI_API_TOKEN": token,
        "COLUMNS": str(columns),
    }
    return subprocess.run(
        [str(CTICTL), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ctictl(api: Api, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    return run_ctictl(api.address, *args, token=token)


def ok_json(api: Api, *args: str) -> Any:
    result = ctictl(api, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON error of a failed ``--json`` run: alone on stderr, nothing on stdout."""
    assert result.returncode != 0 and result.stdout == "", (result.returncode, result.stdout)
    error: dict[str, Any] = json.loads(result.stderr)["error"]
    return error
