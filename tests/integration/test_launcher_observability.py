"""`./shop up --observability`'s parts, each started as the launcher starts them: the OTLP
receiver that takes the platform's spans, and Prometheus scraping what a run records."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import start_http_server

from services.launcher import PYTHONPATH, ROOT, observability, procs
from services.launcher.config import State
from services.launcher.platform import LauncherConfig
from services.launcher.ports import claimed
from tests.integration.test_launcher_cli import launcher

ENV = {**os.environ, "PYTHONPATH": PYTHONPATH}


def test_the_receiver_writes_every_span_it_is_sent_as_a_json_line(tmp_path: Path) -> None:
    proc, endpoint = observability.start_receiver(tmp_path, 0, ENV)
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "probe"}))
        exporter = OTLPSpanExporter(endpoint=endpoint)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("probe")
        with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
            pass
        provider.shutdown()
    finally:
        procs.stop(proc)
    lines = (tmp_path / observability.TRACES_FILE).read_text().splitlines()
    spans = {span["name"]: span for span in map(json.loads, lines)}
    assert set(spans) == {"outer", "inner"}
    assert spans["inner"]["parent_id"] == format(outer.get_span_context().span_id, "016x")
    assert spans["inner"]["trace_id"] == spans["outer"]["trace_id"]
    assert spans["outer"]["service"] == "probe"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


@pytest.mark.skipif(observability.prometheus_binary() is None, reason="no prometheus binary")
def test_prometheus_scrapes_the_metrics_ports_and_envoy_of_the_run(tmp_path: Path) -> None:
    metrics_port = procs.free_port()
    server, thread = start_http_server(metrics_port, addr="127.0.0.1")
    envoy_admin = f"127.0.0.1:{procs.free_port()}"
    state = State(
        metrics={"order": [f"http://127.0.0.1:{metrics_port}/metrics"]},
        envoy_admin_url=f"http://{envoy_admin}",
    )
    binary = observability.prometheus_binary()
    assert binary
    proc, url = observability.start_prometheus(binary, tmp_path, 0, state, ENV)
    try:
        deadline = time.monotonic() + 20
        while True:
            active = _get(f"{url}/api/v1/targets")["data"]["activeTargets"]
            health = {t["scrapeUrl"]: t["health"] for t in active}
            if health.get(f"http://127.0.0.1:{metrics_port}/metrics") == "up":
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.5)
        # Envoy's stats are a target too (nothing listens there in this test).
        assert f"http://{envoy_admin}/stats/prometheus" in health
        # The platform's alert rules are loaded.
        groups = _get(f"{url}/api/v1/rules")["data"]["groups"]
        assert any(rule["name"] == "ShopBreakerOpen" for g in groups for rule in g["rules"])
    finally:
        procs.stop(proc)
        server.shutdown()
        server.server_close()
        thread.join()
    # Its own log lines are JSON objects, like every other process's.
    for line in proc.log.read_text().splitlines():
        assert isinstance(json.loads(line), dict), line


def test_observability_claims_its_ports_and_the_flag_is_offered(tmp_path: Path) -> None:
    config = LauncherConfig(run_dir=tmp_path, observability=True)
    names = {setting for _, setting, _ in claimed(config)}
    assert "OTLP_RECEIVER_PORT" in names
    assert ("PROMETHEUS_PORT" in names) is (observability.prometheus_binary() is not None)
    elsewhere = LauncherConfig(run_dir=tmp_path, observability=True, otlp_endpoint="http://c:4317")
    assert "OTLP_RECEIVER_PORT" not in {setting for _, setting, _ in claimed(elsewhere)}
    plain = {setting for _, setting, _ in claimed(LauncherConfig(run_dir=tmp_path))}
    assert not plain & {"OTLP_RECEIVER_PORT", "PROMETHEUS_PORT"}

    shown = launcher(tmp_path, "up", "--help")
    assert shown.returncode == 0
    assert "--observability" in shown.stdout
    helped = subprocess.run(["./shop", "help"], cwd=ROOT, capture_output=True, text=True)
    assert "--observability" in helped.stdout
