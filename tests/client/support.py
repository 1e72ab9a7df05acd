"""Paths and tools shared by the client-distribution tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import REPO

CLIENT = REPO / "clients" / "python"
CLIENT_V1 = CLIENT / "src" / "cti" / "v1"
PROTOS = REPO / "protos"
SNAPSHOT = PROTOS / "descriptor.json"
BUF = REPO / "tools" / "buf" / "node_modules" / ".bin" / "buf"
CONSTRAINTS = REPO / "constraints.txt"


def buf() -> str:
    """The pinned buf binary (`make proto-tools` installs it; `make test` depends on it)."""
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: run `make proto-tools`")
    return str(BUF)


def generated() -> list[Path]:
    """The generated modules; fails when `make proto` has not run."""
    files = sorted(CLIENT_V1.glob("*_pb2*.py*"))
    if not files:
        pytest.fail(f"no generated code in {CLIENT_V1}: run `make proto`")
    return files
