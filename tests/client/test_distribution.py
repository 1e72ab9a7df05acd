"""cti-api as a client developer gets it: the wheel and sdist built from clients/python,
the wheel installed into a fresh virtualenv with nothing else of the project, its stubs
typed for mypy, and the examples of docs/client-guide.md run in that virtualenv, as
written, against both services."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest

from cti.config import parse_settings
from directory_service.app import create_grpc_server
from tests.client.support import CLIENT, CLIENT_V1, CONSTRAINTS, PROTOS, generated
from tests.events.grpc_support import TOKEN, registration, running_api
from tests.support import REPO, free_port

# Building and installing into fresh virtualenvs downloads (or takes from pip's cache).
pytestmark = pytest.mark.timeout(900)

GUIDE = REPO / "docs" / "client-guide.md"
PIP_TIMEOUT = 600
# What a fresh venv may hold besides cti-api and its three dependencies.
VENV_BASE = {"pip", "setuptools", "wheel"}
DEPENDENCIES = {"grpcio", "protobuf", "googleapis-common-protos", "typing-extensions"}


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


def run(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


def wheel_metadata(wheel: Path) -> tuple[str, list[str]]:
    """``(version, [Requires-Dist, ...])`` of a built wheel."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(name).decode())
    return metadata["Version"], metadata.get_all("Requires-Dist") or []


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """sdist, then the wheel built from that sdist (python -m build), in a copy of the
    client project so nothing is written into the source tree."""
    generated()
    work = tmp_path_factory.mktemp("client")
    project = work / "python"
    shutil.copytree(
        CLIENT, project, ignore=shutil.ignore_patterns("dist", "build", "*.egg-info", "__pycache__")
    )
    out = work / "dist"
    run(sys.executable, "-m", "build", "--outdir", out, project)
    (wheel,) = out.glob("cti_api-*.whl")
    (sdist,) = out.glob("cti_api-*.tar.gz")
    return Dist(wheel, sdist)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, dist: Dist) -> Path:
    """A fresh virtualenv with the wheel (and, through pip, its dependencies) only."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    run(sys.executable, "-m", "venv", home)
    python = home / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--constraint", CONSTRAINTS, dist.wheel)
    return home


def contract_files() -> set[str]:
    """What cti/v1 must ship for every .proto of protos/cti/v1."""
    names = {"__init__.py", "py.typed"}
    for proto in (PROTOS / "cti" / "v1").glob("*.proto"):
        stem = proto.stem
        names |= {proto.name, f"{stem}_pb2.py", f"{stem}_pb2.pyi"}
        names |= {f"{stem}_pb2_grpc.py", f"{stem}_pb2_grpc.pyi"}
    return {f"cti/v1/{name}" for name in names}


HELPERS = {f"cti/client/{n}" for n in ("__init__.py", "channel.py", "errors.py", "py.typed")}


def test_the_wheel_holds_the_contracts_typed_and_nothing_of_the_servers(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
    packaged = {n for n in names if ".dist-info/" not in n}
    assert packaged == contract_files() | HELPERS
    assert "cti/__init__.py" not in names  # a namespace: the servers' cti sits beside it
    _, requires = wheel_metadata(dist.wheel)
    names_required = sorted(re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0] for r in requires)
    assert names_required == ["googleapis-common-protos", "grpcio", "protobuf"]


def test_the_sdist_builds_without_the_repository(dist: Dist) -> None:
    """The wheel above was built from the sdist; it carries the generated code itself."""
    with tarfile.open(dist.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {f"src/{n}" for n in contract_files() | HELPERS} <= names
    assert "pyproject.toml" in names


def test_the_version_is_the_api_version_and_the_bounds_match_the_generated_code(
    dist: Dist,
) -> None:
    """Major = the proto package's version (cti.v1); the lower bounds of grpcio and
    protobuf are the versions the generated code checks for at import."""
    version, requires = wheel_metadata(dist.wheel)
    assert version.split(".")[0] == CLIENT_V1.name.removeprefix("v")
    grpc_code = next(CLIENT_V1.glob("*_pb2_grpc.py")).read_text()
    pb2_code = next(p for p in CLIENT_V1.glob("*_pb2.py") if "_grpc" not in p.name).read_text()
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_code)
    protobuf_version = re.search(r"# Protobuf Python Version: ([\d.]+)", pb2_code)
    assert grpc_version and protobuf_version
    assert f"grpcio>={grpc_version[1]}" in requires, requires
    major = protobuf_version[1].split(".")[0]
    assert f"protobuf<{int(major) + 1},>={protobuf_version[1]}" in requires, requires


def test_a_fresh_venv_gets_the_stubs_and_nothing_of_the_servers(venv: Path) -> None:
    python = venv / "bin" / "python"
    listed = run(python, "-m", "pip", "list", "--format=json").stdout
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert "cti-api" in installed
    assert installed - VENV_BASE - {"cti-api"} <= DEPENDENCIES, installed
    probe = (
        "import importlib.util as u\n"
        "from cti.v1 import directory_pb2_grpc, events_pb2_grpc\n"
        "from cti.client import connect, read_error\n"
        "print([m for m in ('cti.config', 'directory_service', 'event_service', 'ctictl',"
        " 'redis', 'grpc_tools') if u.find_spec(m) is not None])\n"
    )
    # From an empty directory, so the repository is not on sys.path.
    assert run(python, "-c", probe, cwd=venv).stdout.strip() == "[]"


TYPED_CLIENT = """\
from cti.client import connect, read_error
from cti.v1 import events_pb2, events_pb2_grpc

stub = events_pb2_grpc.EventServiceStub(connect("127.0.0.1:50052", token="t"))
registration = events_pb2.Registration(name="registrations/1000", expires=60)
expires: int = registration.expires
wrong: str = registration.expires
events_pb2.WatchRequest(resume_token=5)
"""


def test_the_installed_stubs_are_typed(venv: Path, tmp_path: Path) -> None:
    """mypy --strict, pointed at the fresh venv, types the messages and the stubs (PEP 561):
    the stub's constructor is typed (else: a call to an untyped function), and the two
    wrong lines are the only errors. (Typed RPC results need grpcio's stubs,
    types-grpcio, as for any gRPC client.)"""
    script = tmp_path / "client.py"
    script.write_text(TYPED_CLIENT)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--ignore-missing-imports",
            "--no-incremental",
            "--python-executable",
            str(venv / "bin" / "python"),
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        cwd=tmp_path,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["7", "8"], result.stdout
    assert 'expression has type "int", variable has type "str"' in errors[0]
    assert '"resume_token"' in errors[1]


def guide_script() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.S | re.M)
    assert len(blocks) >= 5
    return "\n\n".join(blocks)


@pytest.fixture
def services(redis_url: str) -> Iterator[dict[str, str]]:
    """Both gRPC APIs on loopback with one token, and registrations arriving meanwhile
    (written the way the event service's core writes them) for the Watch example."""
    port = free_port()
    document = {
        "redis": {"url": redis_url},
        "directory": {"grpc": {"listen": f"127.0.0.1:{port}", "tokens": [TOKEN]}},
    }
    directory = create_grpc_server(parse_settings(json.dumps(document)))
    directory.start()
    stop = threading.Event()
    try:
        with running_api(redis_url) as events:
            address = events.settings.events.grpc.listen
            events.write("registration", "1000", registration("1000"))

            def register() -> None:
                for n in range(100_000):
                    if stop.wait(0.05):
                        return
                    key = f"2{n % 1000:03d}"
                    events.write("registration", key, registration(key))

            writer = threading.Thread(target=register, daemon=True)
            writer.start()
            try:
                yield {
                    "CTI_DIRECTORY_ADDRESS": f"127.0.0.1:{port}",
                    "CTI_EVENTS_ADDRESS": address,
                    "CTI_API_TOKEN": TOKEN,
                }
            finally:
                stop.set()
                writer.join()
    finally:
        directory.stop(0).wait()


def test_the_guide_examples_run_as_written(
    venv: Path, services: dict[str, str], tmp_path: Path
) -> None:
    python = venv / "bin" / "python"
    # The reflection example's one extra package.
    run(python, "-m", "pip", "install", "-q", "--constraint", CONSTRAINTS, "grpcio-reflection")
    script = tmp_path / "guide.py"
    script.write_text(guide_script())
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **services}
    output = run(python, script, cwd=tmp_path, env=env).stdout
    assert "created domains/guide.example.com/extensions/1000 generated password: True" in output
    assert "batch: 10 extensions" in output
    assert "refused: ABORTED ETAG_MISMATCH" in output
    assert "bad field: extension_id" in output
    assert re.search(r"^first event: TYPE_SNAPSHOT", output, re.M), output
    assert re.search(r"^change: TYPE_UPSERT 2\d{3}$", output, re.M), output
    assert re.search(r"^resumed after \d+-\d+ with \d+-\d+ 2\d{3}$", output, re.M), output
    assert '"name": "domains/guide.example.com/extensions/1000"' in output
    assert '"effective_caller_id_name": "Alice Smith"' in output
