"""``ctictl`` is a client: importing every module of it loads no server code (the services'
packages, the gRPC server plumbing, the server halves of health and reflection) and no
Redis client, so it installs and starts without either."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CTICTL_MODULES = (
    "ctictl.cli",
    "ctictl.client",
    "ctictl.bulk",
    "ctictl.export",
    "ctictl.importer",
    "ctictl.output",
)
SERVER_MODULES = (
    "directory_service",
    "event_service",
    "cti.grpc_server",
    "cti.redis_client",
    "grpc_health.v1.health",  # the servicer; ctictl uses only health_pb2(_grpc)
    "grpc_reflection.v1alpha.reflection",  # the server side; ctictl uses reflection_pb2
    "redis",
)


def loaded_modules(imports: tuple[str, ...]) -> set[str]:
    """The names in ``sys.modules`` of a fresh interpreter after importing ``imports``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(imports)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout))


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_ctictl_loads_no_server_module() -> None:
    loaded = loaded_modules(CTICTL_MODULES)
    assert "ctictl.cli" in loaded and "cti.v1.directory_pb2_grpc" in loaded
    server = sorted(m for m in loaded if any(is_within(m, p) for p in SERVER_MODULES))
    assert server == []


def test_the_check_sees_server_modules() -> None:
    """The same probe on a service module finds them: the check above can fail."""
    loaded = loaded_modules(("directory_service.__main__",))
    assert {"cti.grpc_server", "grpc_health.v1.health", "redis"} <= loaded
