"""The fake upstream systems (ERP, Routing, Warehouse) as processes of the local platform."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from services import topology
from services.launcher import ROOT, infra, procs


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/_admin/health", timeout=1) as response:
        return int(response.status) == 200


def start_stub(
    name: str, run_dir: Path, port: int, env: dict[str, str], host: str = infra.HOST
) -> tuple[procs.Proc, str]:
    """`python -m stubs <name>` on host:port, once its admin health check answers."""
    known = [p.name for p in topology.of_kind(topology.Kind.STUB)]
    if name not in known:
        raise ValueError(f"unknown stub {name!r}: one of {', '.join(known)}")
    proc = procs.start(
        name,
        [sys.executable, "-m", "stubs", name, "--host", host, "--port", str(port)],
        log_dir=run_dir / "logs", env=env, cwd=ROOT,
    )  # fmt: skip
    url = f"http://{host}:{port}"
    with procs.stop_on_error(proc):
        procs.wait_until(proc, lambda: _healthy(url), what=f"the {name} stub to serve")
    return proc, url
