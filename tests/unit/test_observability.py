"""The dashboards and alerts (deploy/observability/), checked offline.

The scrape config and the dashboard must be exactly what `tools.observability` renders
from services/topology.py; every server and worker and Envoy is scraped. Every PromQL
expression of the dashboard and the alert rules names only series a process exports
(the catalogue of services/kit/metrics.py; Envoy's are checked against a real Envoy in
tests/e2e/test_dashboards.py). promtool checks the config and the rules and runs the
rules' unit tests (skipped where promtool is absent). Every alert has a `for:`, a
severity, a summary, a description and a runbook that docs/OPERATIONS.md holds, and
fires and stays quiet in the unit tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from services import topology
from services.kit import metrics
from services.launcher import ROOT
from services.topology import Kind
from tests.unit.test_docs import anchors as docs_anchors
from tools.observability import render
from tools.observability.dashboard import DATASOURCE, SCHEMA_VERSION
from tools.observability.queries import SUFFIXES, alert_rules, dashboard_queries, series_names

PROMTOOL = shutil.which("promtool")
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
SEVERITIES = {"critical", "warning"}
# What Prometheus adds itself to every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
Doc = dict[str, Any]


def dashboard() -> Doc:
    loaded: Doc = json.loads(render.DASHBOARD.read_text())
    return loaded


def exported() -> set[str]:
    """Every series name the catalogue's metrics put on a `/metrics` page."""
    names: set[str] = set()
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name: str = metric._name
        names |= {name + s for s in SUFFIXES.get(metric._type, ("",))}
    return names


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        pytest.skip("no promtool on PATH (Debian's `prometheus` package ships it)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


# --- the generated files are the topology's ----------------------------------------------


def test_the_files_are_rendered_from_the_topology() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in render.render().items()
        if not path.is_file() or path.read_text() != text
    ]
    assert not stale, (
        f"{stale} differ from services/topology.py: run "
        "`PYTHONPATH=.:gen .venv/bin/python -m tools.observability` and commit the result"
    )


def test_every_server_worker_and_envoy_is_scraped() -> None:
    config = yaml.safe_load(render.PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for process in topology.of_kind(Kind.SERVER, Kind.WORKER):
        assert process.metrics_port is not None, process.name
        (static,) = jobs[process.name]["static_configs"]
        assert f"127.0.0.1:{process.metrics_port.default}" in static["targets"], process.name
    (edge,) = topology.of_kind(Kind.EDGE)
    assert edge.admin_port is not None
    assert jobs[edge.name]["metrics_path"] == "/stats/prometheus"
    assert jobs[edge.name]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{edge.admin_port.default}"
    ]
    assert set(jobs) == {p.name for p in render.scraped()} | {edge.name}


def test_replicas_are_scraped_on_consecutive_ports() -> None:
    worker = topology.by_name("event-worker")
    assert worker.replicas is not None
    assert worker.metrics_port is not None
    three = type(worker)(**{**worker.__dict__, "replicas": type(worker.replicas)(
        worker.replicas.setting, worker.replicas.name_setting, 3)})  # fmt: skip
    base = worker.metrics_port.default
    assert render.targets(three) == [f"127.0.0.1:{base + i}" for i in range(3)]


def test_a_process_without_a_metrics_port_stops_the_render(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = topology.by_name("order")
    silent = type(order)(**{**order.__dict__, "metrics_port": None})
    monkeypatch.setattr(topology, "PROCESSES", (silent, *topology.PROCESSES[1:]))
    with pytest.raises(ValueError, match="order"):
        render.scraped()


# --- every query names a real series -------------------------------------------------------


def test_the_name_extraction_finds_metrics_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{x="rate(b)"}[5m])))'
        " / ignoring(le) group_left c_total offset 5m > 1e3 and on(job) d unless e_gauge[5m:1m]"
    )
    assert series_names(expr) == {"a_bucket", "c_total", "d", "e_gauge"}


def test_every_panel_names_only_exported_series() -> None:
    known = exported()
    unknown = {
        (title, name)
        for title, expr in dashboard_queries()
        for name in series_names(expr)
        if not name.startswith("envoy_") and name not in known
    }
    assert unknown == set(), "panels name series no process exports"


def test_every_alert_names_only_exported_series() -> None:
    known = exported() | SYNTHETIC
    unknown = {
        (rule["alert"], name)
        for rule in alert_rules()
        for name in series_names(rule["expr"])
        if not name.startswith("envoy_") and name not in known
    }
    assert unknown == set(), "alerts name series no process exports"


def test_a_misspelt_series_is_caught() -> None:
    assert "shop_queue_depth" not in exported()
    assert series_names("max by (queue) (shop_queue_depth)") == {"shop_queue_depth"}


# --- the dashboard -----------------------------------------------------------------------


def test_the_dashboard_has_every_area_and_one_data_source() -> None:
    board = dashboard()
    assert board["schemaVersion"] == SCHEMA_VERSION
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "DS_PROMETHEUS", "datasource", "prometheus",
    )  # fmt: skip
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    for area in ("RPCs", "Upstreams", "Caches", "Queues", "Outbox", "Database", "Rate limits",
                 "Envoy"):  # fmt: skip
        assert any(row.startswith(area) for row in rows), area
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels
    assert all(p["datasource"] == DATASOURCE for p in panels)
    assert all(t["datasource"] == DATASOURCE for p in panels for t in p["targets"])
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    # Every catalogued metric family shows somewhere (a panel per kit mechanism).
    shown = {name for _, expr in dashboard_queries() for name in series_names(expr)}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in shown}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            assert metric._name in families, metric._name


# --- the alert rules ---------------------------------------------------------------------


def test_every_alert_has_a_window_a_severity_and_a_runbook() -> None:
    anchors = docs_anchors(OPERATIONS.read_text())
    rules = alert_rules()
    assert len(rules) >= 7
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/OPERATIONS.md", name
        assert anchor in anchors, (name, anchor)


def test_the_alerts_cover_what_operations_needs() -> None:
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    for needed in ("grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
                   'state="dead"', 'state="open"', 'state="pending"', 'state="stream"',
                   "shop_outbox_lag_seconds", "up == 0"):  # fmt: skip
        assert needed in exprs, needed


def test_every_alert_fires_and_stays_quiet_in_its_unit_tests() -> None:
    tests = yaml.safe_load(render.RULE_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    for rule in alert_rules():
        mine = [c for c in checks if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never fires in a test"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never quiet"


# --- promtool ----------------------------------------------------------------------------


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    """deploy/observability/ in tmp_path: promtool resolves the rule files from there."""
    shutil.copytree(render.OUT, tmp_path / "observability")
    return tmp_path / "observability"


def test_promtool_checks_the_config(copied: Path) -> None:
    result = promtool("check", "config", "prometheus/prometheus.yml", cwd=copied)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_checks_the_rules(copied: Path) -> None:
    result = promtool("check", "rules", "rules/shop-alerts.yml", cwd=copied)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_rules())} rules found" in result.stdout


def test_promtool_runs_the_rules_unit_tests(copied: Path) -> None:
    result = promtool("test", "rules", "rules/shop-alerts.test.yml", cwd=copied)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_rule_test_that_expects_the_wrong_alert(copied: Path) -> None:
    tests = copied / "rules" / "shop-alerts.test.yml"
    text = tests.read_text().replace(
        "severity: critical, job: order", "severity: warning, job: order"
    )
    tests.write_text(text)
    result = promtool("test", "rules", "rules/shop-alerts.test.yml", cwd=copied)
    assert result.returncode != 0
    assert "ShopTargetDown" in result.stdout + result.stderr
