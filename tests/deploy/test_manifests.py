"""The Kubernetes manifests render with Kustomize, validate against the Kubernetes schemas
offline, and say what the code actually does: modules, ports, config keys, env vars,
probes, Secrets."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from cti.addresses import split_address
from cti.config import ServiceName, load_settings, parse_settings
from cti.redis_client import CONNECT_TIMEOUT, SOCKET_TIMEOUT
from directory_service.lookup import http as directory_http
from event_service import status_http
from tests.deploy.manifests import (
    K8S,
    OVERLAYS,
    POD_IP_STAND_IN,
    Doc,
    Rendered,
    container_ports,
    containers,
    env_for_code,
    pod_labels,
    probes,
    render,
    selects,
)
from tests.support import REPO

KUBERNETES_VERSION = "1.30.0"  # the oldest we support: native gRPC probes, preStop sleep
SERVICE_OF_MODULE: dict[str, ServiceName] = {
    "directory_service": "directory",
    "event_service": "events",
}
READY_PATHS = {
    "directory_service": directory_http.READY_PATH,
    "event_service": status_http.READY_PATH,
}
READY_SECONDS = {  # the longest a readiness check may take before it answers
    "directory_service": directory_http.READY_TIMEOUT,
    "event_service": CONNECT_TIMEOUT + SOCKET_TIMEOUT,
}
CODE_DIRS = ("cti", "directory_service", "event_service")
PYTHON_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param, render(K8S / "overlays" / request.param))


def _our_deployments(rendered: Rendered) -> list[Doc]:
    return [d for d in rendered.deployments() if d["metadata"]["name"].startswith("cti-")]


def _module(container: Doc) -> str:
    command = container["command"]
    assert command[:2] == ["python", "-m"], command
    return str(command[2])


def test_every_resource_is_valid_for_kubernetes(rendered: Rendered) -> None:
    assert rendered.docs
    for doc in rendered.docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_base_renders_on_its_own() -> None:
    kinds = sorted(doc["kind"] for doc in render(K8S / "base"))
    assert kinds.count("Deployment") == 2
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"):
        assert kind in kinds


def test_directory_scales_and_events_pair_up(rendered: Rendered) -> None:
    directory = rendered.one("Deployment", "cti-directory")
    events = rendered.one("Deployment", "cti-events")
    hpa = rendered.one("HorizontalPodAutoscaler", "cti-directory")
    assert "replicas" not in directory["spec"]  # the HPA owns the count
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": directory["metadata"]["name"],
    }
    assert events["spec"]["replicas"] == 2
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        matched = [
            d
            for d in _our_deployments(rendered)
            if selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(d))
        ]
        assert len(matched) == 1, pdb["metadata"]["name"]


def test_commands_are_real_entry_points(rendered: Rendered) -> None:
    images = set()
    for deployment in _our_deployments(rendered):
        for container in containers(deployment):
            module = _module(container)
            assert module in SERVICE_OF_MODULE
            assert importlib.util.find_spec(f"{module}.__main__") is not None
            assert (REPO / module / "__main__.py").is_file()
            images.add(container["image"])
    assert len(images) == 1  # one image, two entry points


@pytest.mark.parametrize("module", sorted(SERVICE_OF_MODULE))
def test_entry_points_accept_the_arguments_the_manifests_pass(module: str) -> None:
    dev = Rendered("dev", render(K8S / "overlays" / "dev"))
    (container,) = [c for d in _our_deployments(dev) for c in containers(d) if _module(c) == module]
    options = [a for a in container["args"] if a.startswith("--")]
    shown = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for option in options:
        assert option in shown, (module, option)


def _config_for(rendered: Rendered, deployment: Doc, container: Doc, tmp_path: Path) -> Path:
    """The cti.json the container is given with ``--config``, from the ConfigMap it mounts."""
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    mount = next(m for m in container["volumeMounts"] if config_path.parent == Path(m["mountPath"]))
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    configmap = rendered.one("ConfigMap", volume["configMap"]["name"])
    text = configmap["data"][config_path.name]
    parse_settings(text, "ConfigMap")  # unknown keys and bad values are refused
    local = tmp_path / config_path.name
    local.write_text(text)
    return local


def test_ports_and_listen_addresses_match_the_config(rendered: Rendered, tmp_path: Path) -> None:
    for deployment in _our_deployments(rendered):
        (container,) = containers(deployment)
        service = SERVICE_OF_MODULE[_module(container)]
        config = _config_for(rendered, deployment, container, tmp_path)
        settings = load_settings(config, env_for_code(container), service)
        if service == "directory":
            listens = {
                "http": settings.directory.http.listen,
                "grpc": settings.directory.grpc.listen,
            }
        else:
            listens = {
                "grpc": settings.events.grpc.listen,
                "metrics": settings.events.metrics_listen,
            }
        for name, listen in listens.items():
            host, port = split_address(listen)
            assert host in ("0.0.0.0", "::"), f"{listen} is unreachable from other pods"
            assert container_ports(deployment)[name] == port, (deployment["metadata"]["name"], name)
        assert set(container_ports(deployment)) == set(listens)


def test_probes_use_grpc_health_on_the_grpc_port(rendered: Rendered) -> None:
    for deployment in _our_deployments(rendered):
        (container,) = containers(deployment)
        ports = container_ports(deployment)
        found = dict(probes(container))
        assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(found)
        for kind, probe in found.items():
            if "grpc" in probe:
                assert probe["grpc"]["port"] == ports["grpc"], kind
            else:  # readiness: the HTTP endpoint that checks Redis / the cache
                assert kind == "readinessProbe"
                port = probe["httpGet"]["port"]
                module = _module(container)
                assert probe["httpGet"]["path"] == READY_PATHS[module]
                assert port in ports, (deployment["metadata"]["name"], port)
                assert probe["timeoutSeconds"] > READY_SECONDS[module]
        assert "grpc" in found["livenessProbe"] and "grpc" in found["startupProbe"]


def test_env_vars_are_ones_the_code_reads(rendered: Rendered) -> None:
    source = "\n".join(
        p.read_text() for d in CODE_DIRS for p in (REPO / d).rglob("*.py") if "v1" not in p.parts
    )
    for deployment in _our_deployments(rendered):
        (container,) = containers(deployment)
        defined: set[str] = set()
        expanded = {
            used
            for item in container["env"]
            for used in re.findall(r"\$\((\w+)\)", str(item.get("value", "")))
        }
        for item in container["env"]:
            name = item["name"]
            read = name in PYTHON_ENV or f'"{name}"' in source or name in expanded
            assert read, f"nothing reads {name}"
            for used in re.findall(r"\$\((\w+)\)", str(item.get("value", ""))):
                assert used in defined, f"{name} uses $({used}) before it is defined"
            defined.add(name)


def test_event_replicas_advertise_their_pod_ip_and_grpc_port(
    rendered: Rendered, tmp_path: Path
) -> None:
    """Call control forwarded between replicas dials the advertised address: the pod's
    own IP (not the Service, which may pick any replica) and its gRPC container port."""
    events = rendered.one("Deployment", "cti-events")
    (container,) = containers(events)
    config = _config_for(rendered, events, container, tmp_path)
    settings = load_settings(config, env_for_code(container), "events")
    assert settings.events.grpc.reachable_at == (
        f"{POD_IP_STAND_IN}:{container_ports(events)['grpc']}"
    )


def test_secret_refs_exist_and_are_documented(rendered: Rendered) -> None:
    guide = (K8S / "README.md").read_text()
    generated = {s["metadata"]["name"]: set(s.get("data", {})) for s in rendered.of_kind("Secret")}
    for workload in rendered.workloads():
        for container in containers(workload):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                if rendered.overlay == "dev":  # dev generates its Secrets
                    assert ref["key"] in generated[ref["name"]], ref
                else:  # prod expects them created outside git, as the guide says
                    assert f"{ref['name']}" in guide and f"{ref['key']}" in guide, ref


def test_services_and_policies_point_at_real_ports(rendered: Rendered) -> None:
    workloads = rendered.workloads()
    for service in rendered.of_kind("Service"):
        (target,) = [w for w in workloads if selects(service["spec"]["selector"], pod_labels(w))]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports(target), (service, port)
            assert container_ports(target)[port["targetPort"]] == port["port"]
    for policy in rendered.of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        (target,) = [w for w in workloads if selects(selector, pod_labels(w))]
        numbers = set(container_ports(target).values())
        for rule in policy["spec"]["ingress"]:
            assert rule["from"], "an empty 'from' would admit everyone"
            for port in rule["ports"]:
                assert port["port"] in numbers, (policy["metadata"]["name"], port)


def test_xml_curl_port_admits_only_freeswitch_and_monitoring(rendered: Rendered) -> None:
    policy = rendered.one("NetworkPolicy", "cti-directory-ingress")
    (service,) = [
        s for s in rendered.of_kind("Service") if s["metadata"]["name"] == "cti-directory"
    ]
    http = service["spec"]["ports"][0]
    assert http["name"] == "http"
    sources = [
        peer
        for rule in policy["spec"]["ingress"]
        if any(p["port"] == http["port"] for p in rule["ports"])
        for peer in rule["from"]
    ]
    assert sources == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"cti.io/freeswitch": "true"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]


def test_pods_run_non_root_read_only_without_capabilities(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod.get("automountServiceAccountToken") is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "memory" in container["resources"]["limits"]
            assert "cpu" in container["resources"]["requests"]


def test_image_user_matches_run_as_user(rendered: Rendered) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+)", dockerfile, re.M)
    for deployment in _our_deployments(rendered):
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user)


def test_dockerfile_builds_esl_like_the_makefile() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    for pin in re.findall(r"(swig==[\d.]+|python-ESL==[\d.]+)", makefile):
        assert pin in dockerfile
    assert "--no-build-isolation" in dockerfile
    assert dockerfile.count("FROM python:3.11-slim") == 2  # build stage + slim runtime
    assert "grpc_tools.protoc -Iprotos" in dockerfile  # generated code is not committed
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert json.loads(cmd)[:2] == ["python", "-m"]
    assert json.loads(cmd)[2] in SERVICE_OF_MODULE


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    copied = re.findall(r"^COPY (\S+) ", (REPO / "Dockerfile").read_text(), re.M)
    assert "*" in ignore  # everything else (.venv, .git, tests) stays out
    for path in copied:
        assert f"!{path.rstrip('/')}/" in ignore or f"!{path}" in ignore, path


def test_dev_redis_has_keyspace_notifications_for_the_directory_cache() -> None:
    dev = Rendered("dev", render(K8S / "overlays" / "dev"))
    (redis,) = containers(dev.one("StatefulSet", "cti-redis"))
    args = redis["args"]
    assert args[args.index("--notify-keyspace-events") + 1] == "KEA"
    (directory,) = containers(dev.one("Deployment", "cti-directory"))
    url = env_for_code(directory)["REDIS_URL"]
    service = dev.one("Service", "cti-redis")
    assert url == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"


def test_no_replicas_field_where_an_hpa_owns_the_count(rendered: Rendered) -> None:
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        target = rendered.one("Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], target["metadata"]["name"]


def test_headless_services_list_the_grpc_pods_for_client_side_balancing(
    rendered: Rendered,
) -> None:
    guide = (K8S / "README.md").read_text()
    for name in ("cti-directory", "cti-events"):
        service = rendered.one("Service", f"{name}-headless")
        regular = next(s for s in rendered.of_kind("Service") if s["metadata"]["name"] == name)
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"] == regular["spec"]["selector"]
        (port,) = service["spec"]["ports"]
        assert port["name"] == "grpc"
        assert f"dns:///{name}-headless." in guide
    assert "round_robin" in guide
