"""The breaking-change check (`make proto-breaking`, part of `make lint` and so of CI):
buf compares a copy of protos/ to the released contracts in protos/descriptor.json.
Additive changes pass; a wire-, JSON- or caller-incompatible one fails."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.client.support import PROTOS, SNAPSHOT, buf

EVENTS = Path("cti/v1/events.proto")
DIRECTORY = Path("cti/v1/directory.proto")


def breaking(
    tmp_path: Path, edit: tuple[Path, str, str] | None
) -> subprocess.CompletedProcess[str]:
    """``buf breaking`` on a copy of protos/ with ``(file, old, new)`` replaced once."""
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    if edit is not None:
        path, old, new = edit
        text = (copy / path).read_text()
        assert text.count(old) == 1, f"{old!r} must occur once in {path}"
        (copy / path).write_text(text.replace(old, new))
    return subprocess.run(
        [buf(), "breaking", "--against", str(SNAPSHOT)],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_current_contracts_are_compatible_with_the_released_ones(tmp_path: Path) -> None:
    result = breaking(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        # A field's type changes: old clients decode garbage.
        ((EVENTS, "int64 expires = 12;", "string expires = 12;"), "expires"),
        # A field is renumbered: old clients read nothing (or another field).
        ((EVENTS, "string contact = 5;", "string contact = 55;"), "contact"),
        # A field disappears without `reserved`: its number may be reused.
        ((DIRECTORY, "  string etag = 8;\n}", "}"), "etag"),
        # A rename keeps the wire but breaks JSON clients (grpcurl, reflection).
        ((EVENTS, "string user_agent = 6;", "string agent = 6;"), "user_agent"),
        # A method disappears.
        (
            (
                EVENTS,
                "  rpc GetRegistration(GetRegistrationRequest) returns (Registration);\n",
                "",
            ),
            "GetRegistration",
        ),
    ],
    ids=["type", "number", "deleted-field", "json-name", "deleted-method"],
)
def test_an_incompatible_change_fails_the_check(
    tmp_path: Path, edit: tuple[Path, str, str], complaint: str
) -> None:
    result = breaking(tmp_path, edit)
    assert result.returncode != 0, "buf breaking accepted an incompatible change"
    assert complaint in result.stdout + result.stderr


def test_an_additive_change_passes_the_check(tmp_path: Path) -> None:
    result = breaking(
        tmp_path, (EVENTS, "string json = 14;\n", "string json = 14;\n  string site = 15;\n")
    )
    assert result.returncode == 0, result.stdout + result.stderr


NEW_FILE = """\
syntax = "proto3";

package cti.v1;

message Probe {
  string name = 1;
}
"""


def lint(tmp_path: Path, extra: str | None) -> subprocess.CompletedProcess[str]:
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    if extra is not None:
        (copy / "cti" / "v1" / "probe.proto").write_text(extra)
    return subprocess.run([buf(), "lint"], cwd=copy, capture_output=True, text=True, timeout=120)


def test_the_contracts_pass_lint(tmp_path: Path) -> None:
    result = lint(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_wants_the_language_options_on_every_file_of_the_package(tmp_path: Path) -> None:
    result = lint(tmp_path, NEW_FILE)
    assert result.returncode != 0
    for option in ("go_package", "java_package", "csharp_namespace"):
        assert f'for option "{option}"' in result.stdout, result.stdout
