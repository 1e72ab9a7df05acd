"""Alerts and dashboard: the PrometheusRule passes ``promtool check rules`` and its unit
tests (``promtool test rules``, one firing and one quiet case per alert at least), the
monitoring component renders onto an overlay, and every metric the rules and the Grafana
dashboard query is one the services export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

import event_service.metrics  # noqa: F401 (registers the event service's metrics)
from directory_service.lookup.cache import DirectoryCache
from directory_service.lookup.metrics import DirectoryMetrics
from tests.deploy.manifests import K8S, render
from tests.support import REPO

MONITORING = K8S / "components" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
RULE_TESTS = MONITORING / "tests" / "alerts.test.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "cti-overview.json"
METRIC = re.compile(r"\bcti_[a-z0-9_]+\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: `make system-deps` installs it (Debian: prometheus)")
    return found


def _rule_spec() -> dict[str, Any]:
    rule = yaml.safe_load(RULES.read_text())
    assert rule["kind"] == "PrometheusRule"
    spec: dict[str, Any] = rule["spec"]
    return spec


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _rule_spec()["groups"] for rule in group["rules"]]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's spec as a plain rule file, next to the unit tests naming it."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_rule_spec(), sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return tmp_path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules(rules_dir: Path) -> None:
    ran = _run([_promtool(), "check", "rules", "rules.yaml"], rules_dir)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in ran.stdout


def test_promtool_unit_tests_pass(rules_dir: Path) -> None:
    ran = _run([_promtool(), "test", "rules", RULE_TESTS.name], rules_dir)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_promtool_unit_tests_can_fail(rules_dir: Path) -> None:
    """The harness is live: with a threshold changed, the cases that pinned it fail."""
    rules = (rules_dir / "rules.yaml").read_text()
    assert "> 3" in rules
    (rules_dir / "rules.yaml").write_text(rules.replace("> 3", "> 300"))
    ran = _run([_promtool(), "test", "rules", RULE_TESTS.name], rules_dir)
    assert ran.returncode != 0
    assert "CtiLeaseFlapping" in ran.stdout + ran.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in _alerts()}
    assert names == fired == quiet
    for alert in _alerts():
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def _families(registry: CollectorRegistry) -> Iterator[tuple[str, str]]:
    for family in registry.collect():
        yield family.name, family.type


def exported_metrics() -> set[str]:
    """Every sample name the two services can expose, from their metric definitions."""
    cache = DirectoryCache(redis.asyncio.Redis(), {}, on_error=lambda *_: None)
    families = [*_families(DirectoryMetrics(cache).registry), *_families(REGISTRY)]
    return {name + suffix for name, kind in families for suffix in SUFFIXES.get(kind, ("",))}


def _used(exprs: list[str]) -> set[str]:
    found = set()
    for expr in exprs:
        names = METRIC.findall(expr)
        assert names, f"no cti metric in {expr!r}"
        found.update(names)
    return found


def test_alerts_query_only_exported_metrics() -> None:
    exported = exported_metrics()
    used = _used([alert["expr"] for alert in _alerts()])
    assert used - exported == set()


def _dashboard_targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def test_dashboard_loads_and_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    (datasource,) = dashboard["templating"]["list"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    used = _used([t["expr"] for t in _dashboard_targets(dashboard)])
    assert used - exported_metrics() == set()
    for wanted in (  # lookups, latency, cache, 503s, events, ownership
        "cti_directory_requests_total",
        "cti_directory_request_seconds_bucket",
        "cti_directory_cache_lookups_total",
        "cti_events_received_total",
        "cti_events_lease_held",
        "cti_events_connected",
    ):
        assert wanted in used, wanted


def test_a_made_up_metric_would_be_caught() -> None:
    assert "cti_directory_requests" not in exported_metrics()  # the _total is exported
    assert "cti_events_connected" in exported_metrics()


def test_monitoring_component_renders_onto_an_overlay(tmp_path: Path) -> None:
    overlay = tmp_path / "with-monitoring"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "cti-monitored",  # an overlay's own namespace, whatever it is
                # Kustomize refuses absolute paths; relative ones may climb out.
                "resources": [os.path.relpath(K8S / "overlays" / "prod", overlay)],
                "components": [os.path.relpath(MONITORING, overlay)],
            }
        )
    )
    docs = render(overlay)
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    assert {m["metadata"]["namespace"] for m in monitors} == {"cti-monitored"}
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (target,) = [
            d
            for d in deployments.values()
            if all(
                d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items()
            )
        ]
        ports = {
            p["name"] for c in target["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "PrometheusRule"] == ["cti-alerts"]
