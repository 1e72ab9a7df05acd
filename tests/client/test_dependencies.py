"""The services' dependency list holds only what they import, and every package the
project installs is pinned in constraints.txt (used by `make install`, CI and the image)."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
from typing import Any

from tests.support import REPO

SERVICE_PACKAGES = ("cti", "directory_service", "event_service", "ctictl")
# Installed for what an imported package does with them, never imported by name.
INDIRECT = {
    "hiredis": "redis-py's C reply parser",
    "uvloop": "granian's event loop (loop 'auto')",
}
# Distributions whose import name the metadata cannot tell (editable installs).
IMPORT_NAME = {"cti-api": "cti.v1"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0])


def project() -> dict[str, Any]:
    document: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(document["project"])


def service_requirements() -> list[str]:
    return [requirement_name(r) for r in project()["dependencies"]]


def imported_modules() -> set[str]:
    """Every module named by an import in the services' code (dotted, and each prefix)."""
    names: set[str] = set()
    for package in SERVICE_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found = [node.module]
                else:
                    continue
                for name in found:
                    parts = name.split(".")
                    names |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return names


def test_every_service_dependency_is_imported() -> None:
    imported = imported_modules()
    modules_of: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(canonical(dist), set()).add(module)
    unused = [
        name
        for name in service_requirements()
        if name not in INDIRECT
        and IMPORT_NAME.get(name) not in imported
        and not modules_of.get(name, set()) & imported
    ]
    assert unused == [], f"declared but never imported: {unused}"


def test_every_installed_requirement_is_pinned() -> None:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonical(name)] = version
    dev = [requirement_name(r) for r in project()["optional-dependencies"]["dev"]]
    local = {"cti-api"}  # built from this repository
    missing = [n for n in (*service_requirements(), *dev) if n not in pins and n not in local]
    assert missing == [], f"not pinned in constraints.txt: {missing}"
    for name in service_requirements():
        if name in pins:
            assert metadata.version(name) == pins[name], (name, metadata.version(name))


def test_install_ci_and_image_use_the_constraints() -> None:
    assert "--constraint $(CONSTRAINTS)" in (REPO / "Makefile").read_text()
    assert "PIP_CONSTRAINT=/src/constraints.txt" in (REPO / "Dockerfile").read_text()
    assert "make test" in (REPO / ".ci" / "run").read_text()  # CI installs through make
