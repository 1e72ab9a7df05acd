"""Render the Kustomize overlays with a real Kustomize and index what they contain."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
Doc = dict[str, Any]


def kustomize_command() -> list[str]:
    """Standalone ``kustomize`` if installed, else the one built into ``kubectl``."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise RuntimeError(
        "neither kustomize nor kubectl is installed (Debian: apt-get install kubectl)"
    )


def render(path: Path) -> list[Doc]:
    """``kustomize build`` of one directory, offline (no remote bases are used)."""
    out = subprocess.run(
        [*kustomize_command(), str(path)], check=True, capture_output=True, text=True, timeout=60
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@dataclass(frozen=True)
class Rendered:
    overlay: str
    docs: list[Doc]

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name_prefix: str) -> Doc:
        (found,) = [d for d in self.of_kind(kind) if d["metadata"]["name"].startswith(name_prefix)]
        return found

    def deployments(self) -> list[Doc]:
        return self.of_kind("Deployment")

    def workloads(self) -> list[Doc]:
        return self.of_kind("Deployment") + self.of_kind("StatefulSet")


def containers(workload: Doc) -> list[Doc]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def pod_labels(workload: Doc) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def container_ports(workload: Doc) -> dict[str, int]:
    """Named container ports of a workload: name -> number."""
    return {
        port["name"]: int(port["containerPort"])
        for container in containers(workload)
        for port in container.get("ports", [])
    }


def probes(container: Doc) -> Iterator[tuple[str, Doc]]:
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in container:
            yield kind, container[kind]


POD_IP_STAND_IN = "10.244.1.7"
"""What ``fieldRef: status.podIP`` stands for in :func:`env_for_code`."""


def env_for_code(container: Doc) -> dict[str, str]:
    """The environment the process would see, with a stand-in for each Secret value and
    the pod's IP, and ``$(VAR)`` expanded from the variables defined before (as the
    kubelet does)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(item["value"])
            )
        elif "fieldRef" in item["valueFrom"]:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", item
            env[item["name"]] = POD_IP_STAND_IN
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = f"secret-{ref['key']}"
    return env
