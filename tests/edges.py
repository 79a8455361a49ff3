"""Extra edges and services of a test's own, in front of the session platform.

A test that needs other limits, a second Envoy or a differently keyed user
service starts them here with the launcher's own code: the same rendered
Envoy config, the same `python -m services.<name>` processes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from services import topology
from services.launcher import PYTHONPATH, certs, edge, infra, procs
from services.launcher.edge_capacity import EdgeCapacity
from services.launcher.edge_limits import EdgeLimits
from services.launcher.edge_routes import Endpoint
from services.launcher.platform import State, start_service


def _endpoint(target: str) -> Endpoint:
    host, _, port = target.rpartition(":")
    return Endpoint(host, int(port))


@dataclasses.dataclass(frozen=True)
class Edge:
    """One running Envoy of a test: its REST base URL (also its gRPC target) and admin."""

    rest_url: str
    grpc_target: str
    admin_url: str = ""


@contextmanager
def running_service(
    name: str, run_dir: Path, env: Mapping[str, str], platform: State | None = None
) -> Iterator[str]:
    """`python -m services.<name>` on a free port with `env`; yields its gRPC target.
    Beside a `platform` that runs mTLS, it serves with the platform's identity of `name`."""
    target = f"{infra.HOST}:{procs.free_port()}"
    full = {**os.environ, "PYTHONPATH": PYTHONPATH, **env, f"{name.upper()}_GRPC_BIND": target}
    own = platform.identity(name) if platform is not None else None
    if own is not None:
        full.update(own.env())
    client = platform.client_tls if platform is not None else None
    proc = start_service(name, topology.clusters()[name], target, full, run_dir, identity=client)
    try:
        yield target
    finally:
        procs.stop(proc)


@contextmanager
def running_edge(
    platform: State,
    run_dir: Path,
    *,
    limits: EdgeLimits | None = None,
    capacity: EdgeCapacity | None = None,
    edge_port: int | None = None,
    replicas: Sequence[Endpoint] | None = None,
    **targets: str,
) -> Iterator[Edge]:
    """An Envoy in front of the platform's services, with limits and capacity of its own;
    `user=` or `ratelimit=` targets replace the platform's own; `replicas` are the Envoys
    of its local cluster (itself alone by default)."""
    upstreams = {**{name: platform.target(name) for name in topology.clusters()}, **targets}
    settings = edge.EdgeSettings(
        edge_address=infra.HOST,
        edge_port=edge_port or procs.free_port(),
        admin_address=infra.HOST,
        admin_port=procs.free_port(),
        upstreams={name: _endpoint(target) for name, target in upstreams.items()},
        limits=limits or EdgeLimits(),
        capacity=capacity or EdgeCapacity(),
        upstream_tls=platform.identity(certs.EDGE),
        replicas=replicas,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    proc = edge.start_envoy(infra.executable("envoy"), settings, run_dir, dict(os.environ))
    try:
        yield Edge(
            f"http://{infra.HOST}:{settings.edge_port}",
            f"{infra.HOST}:{settings.edge_port}",
            f"http://{infra.HOST}:{settings.admin_port}",
        )
    finally:
        procs.stop(proc)


@contextmanager
def running_edges(
    platform: State, run_dir: Path, count: int, limits: EdgeLimits, **targets: str
) -> Iterator[tuple[Edge, ...]]:
    """`count` Envoys of one edge: each lists them all as its local cluster, so they
    share the per-address and per-user quotas out between them."""
    ports = [procs.free_port() for _ in range(count)]
    replicas = tuple(Endpoint(infra.HOST, port) for port in ports)
    with ExitStack() as stack:
        yield tuple(
            stack.enter_context(
                running_edge(
                    platform, run_dir / f"edge-{n}", limits=limits, edge_port=port,
                    replicas=replicas, **targets,
                )
            )
            for n, port in enumerate(ports)
        )  # fmt: skip


def tracer_endpoint(config: Mapping[str, Any]) -> Endpoint | None:
    """Where a rendered Envoy config sends its spans: the address of the cluster its
    listener's OpenTelemetry tracer names, or None without a tracer."""
    resources = config["static_resources"]
    manager = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    provider = manager.get("tracing", {}).get("provider")
    if provider is None or provider["name"] != "envoy.tracers.opentelemetry":
        return None
    cluster_name = provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    cluster = next(c for c in resources["clusters"] if c["name"] == cluster_name)
    [lb_endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    socket = lb_endpoint["endpoint"]["address"]["socket_address"]
    return Endpoint(socket["address"], socket["port_value"])
