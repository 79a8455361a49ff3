"""`./shop up --observability`: somewhere for the platform's spans and a Prometheus that
scrapes it, started beside it and stopped with it.

Spans: unless `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector already, the
platform's own OTLP receiver (`python -m tools.otlp_receiver`) takes them on
`OTLP_RECEIVER_PORT` (4317) and appends each span as a JSON line to
`traces.jsonl` in the run directory; every service, worker and Envoy export to
it. Metrics: when a `prometheus` binary is installed (Debian's `prometheus`
package), Prometheus on `PROMETHEUS_PORT` (9090) scrapes every process's metrics
port and Envoy's `/stats/prometheus`, with the platform's alert rules loaded;
its config is generated from where this run listens
(`tools.observability.render`). Where Prometheus is absent, the banner says
what to install, and the config is written for whoever runs it later.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services import topology
from services.launcher import ROOT, infra, procs
from services.launcher.config import State
from services.topology import Kind, Process

# The alert rules every Prometheus of the platform loads (deploy/observability/).
RULES = ROOT / "deploy" / "observability" / "rules" / "shop-alerts.yml"
HOST = "127.0.0.1"  # `./shop up` binds everything on loopback
SCRAPE_INTERVAL = "15s"
Doc = dict[str, Any]
TRACES_FILE = "traces.jsonl"
PROMETHEUS_CONFIG = "prometheus.yml"
# Scrapes a few times a minute: a developer watching a graph sees a change soon.
LOCAL_SCRAPE_INTERVAL = "5s"
JAEGER_HINT = (
    "for a trace UI run Jaeger (docker run --rm -p 16686:16686 -p 4317:4317 "
    "jaegertracing/jaeger) and start with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317"
)


def targets(process: Process) -> list[str]:
    """The metrics endpoints `./shop up` opens for a process: its replicas on consecutive ports."""
    assert process.metrics_port is not None, process.name
    count = process.replicas.default if process.replicas else 1
    return [f"{HOST}:{process.metrics_port.default + i}" for i in range(count)]


def scraped() -> list[Process]:
    """Every server and worker of the topology: each serves `/metrics`."""
    found = topology.of_kind(Kind.SERVER, Kind.WORKER)
    missing = [p.name for p in found if p.metrics_port is None]
    if missing:
        raise ValueError(f"{missing} have no metrics_port in services/topology.py")
    return found


def job(process: Process, at: Sequence[str] | None = None) -> Doc:
    return {
        "job_name": process.name,
        "metrics_path": "/metrics",
        "static_configs": [
            {"targets": list(at or targets(process)), "labels": {"kind": process.kind.name.lower()}}
        ],
    }


def envoy_job(admin: str | None = None) -> Doc:
    (edge,) = topology.of_kind(Kind.EDGE)
    assert edge.admin_port is not None
    return {
        "job_name": edge.name,
        "metrics_path": "/stats/prometheus",
        "static_configs": [
            {"targets": [admin or f"{HOST}:{edge.admin_port.default}"], "labels": {"kind": "edge"}}
        ],
    }


def prometheus_config(
    metrics: Mapping[str, Sequence[str]] | None = None,
    envoy_admin: str | None = None,
    *,
    rules: str = f"../rules/{RULES.name}",
    interval: str = SCRAPE_INTERVAL,
) -> Doc:
    """The scrape config: `metrics` (host:port targets by process name) and `envoy_admin`
    (host:port) are where a platform listens, `./shop up`'s default ports when not given;
    `rules` is relative to the config's folder (or absolute)."""
    return {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"platform": "shop"},
        },
        "rule_files": [rules],
        "scrape_configs": [
            job(p, metrics.get(p.name) if metrics is not None else None)
            for p in scraped()
            if metrics is None or metrics.get(p.name)
        ]
        + [envoy_job(envoy_admin)],
    }


def start_receiver(run_dir: Path, port: int, env: Mapping[str, str]) -> tuple[procs.Proc, str]:
    """The OTLP receiver writing spans to `traces.jsonl`; it and its endpoint."""
    port = port or procs.free_port()
    out = run_dir / TRACES_FILE
    argv = [sys.executable, "-m", "tools.otlp_receiver", "--host", infra.HOST,
            "--port", str(port), "--out", str(out)]  # fmt: skip
    proc = procs.start("otlp-receiver", argv, log_dir=run_dir / "logs", env=env, cwd=ROOT)
    with procs.stop_on_error(proc):
        procs.wait_until(
            proc, lambda: procs.tcp_open(infra.HOST, port), what="the OTLP receiver to listen"
        )
    return proc, f"http://{infra.HOST}:{port}"


def scrape_config(state: State) -> str:
    """Prometheus's config for the platform `state` records: JSON, which is YAML too."""
    metrics = {name: [urlsplit(url).netloc for url in urls] for name, urls in state.metrics.items()}
    envoy = urlsplit(state.envoy_admin_url).netloc if state.envoy_admin_url else None
    config = prometheus_config(metrics, envoy, rules=str(RULES), interval=LOCAL_SCRAPE_INTERVAL)
    return json.dumps(config, indent=2) + "\n"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
        return bool(response.status == 200)


def start_prometheus(
    binary: str, run_dir: Path, port: int, state: State, env: Mapping[str, str]
) -> tuple[procs.Proc, str]:
    """Prometheus scraping the platform of `state`, its data under the run dir; it and its URL."""
    config = run_dir / PROMETHEUS_CONFIG
    procs.write_private(config, scrape_config(state))
    port = port or procs.free_port()
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={run_dir / 'prometheus'}",
            f"--web.listen-address={infra.HOST}:{port}", "--log.format=json"]  # fmt: skip
    proc = procs.start("prometheus", argv, log_dir=run_dir / "logs", env=env)
    url = f"http://{infra.HOST}:{port}"
    with procs.stop_on_error(proc):
        procs.wait_until(proc, lambda: _ready(url), what="Prometheus to be ready")
    return proc, url


def prometheus_hint(run_dir: Path, state: State) -> str:
    """What the banner says when Prometheus is not installed; writes the config it names."""
    config = run_dir / PROMETHEUS_CONFIG
    procs.write_private(config, scrape_config(state))
    return (
        "not installed: apt-get install prometheus (Debian), or run a Prometheus with "
        f"--config.file={config}"
    )
