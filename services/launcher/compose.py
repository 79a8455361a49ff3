"""The container setup derived from the topology: envoy/compose.yaml, and what
docker-compose.yml must say about every process.

`python -m services.launcher.compose` writes envoy/compose.yaml (envoy/edge.yaml
rendered with container names); unit tests fail when that file differs from what
`render_compose_edge()` returns, or when docker-compose.yml drifts from
`expected_services()`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from services import topology
from services.launcher import ROOT, certs
from services.launcher.codegen import DESCRIPTOR_PATH
from services.launcher.edge import LUA, EdgeSettings, render
from services.launcher.edge_routes import Endpoint
from services.topology import Kind, Process

OUTPUT = ROOT / "envoy" / "compose.yaml"
# Where every container finds the service identities (services/launcher/certs.py's
# layout, `<name>/tls.crt` ...): compose mounts the `certs` volume its `certs` task
# fills, Kubernetes each pod's own `<name>-tls` Secret at `<TLS_ROOT>/<name>`.
TLS_ROOT = Path("/etc/shop-tls")
# The OpenTelemetry Collector that Envoy and every server and worker send spans to
# (OTLP/gRPC): a service of docker-compose.yml (its config is COLLECTOR_CONFIG), an
# ExternalName Service in Kubernetes (tools/k8s/policies.py), the same name in both.
COLLECTOR = Endpoint("otel-collector", 4317)
COLLECTOR_CONFIG = ROOT / "deploy" / "observability" / "otel-collector.yaml"

HEADER = """\
# GENERATED from envoy/edge.yaml by services/launcher/compose.py: do not edit.
# Regenerate: PYTHONPATH=.:gen .venv/bin/python -m services.launcher.compose
"""


def _edge() -> Process:
    return topology.of_kind(Kind.EDGE)[0]


def settings() -> EdgeSettings:
    """Inside the envoy container: docker-compose.yml mounts the files at these paths and
    publishes the edge port; the admin interface stays inside the container. Every
    cluster is the compose service of its process's name, on its default port."""
    edge = _edge()
    admin = edge.admin_port or topology.Port("", 9901)
    return EdgeSettings(
        edge_address="0.0.0.0",
        edge_port=edge.port.default,
        admin_address="127.0.0.1",
        admin_port=admin.default,
        upstreams={
            name: Endpoint(name, topology.by_name(name).port.default)
            for name in topology.clusters()
        },
        descriptor_path="/etc/shop/descriptor.binpb",
        lua_path="/etc/shop/edge.lua",
        # The container mounts neither gen/openapi nor Swagger UI's assets.
        docs=None,
        upstream_tls=certs.files(TLS_ROOT, certs.EDGE),
        # One name for every Envoy of the edge: a network alias in docker-compose.yml,
        # a headless Service in Kubernetes (tools/k8s/edge.py).
        replicas=(Endpoint(replicas_host(), edge.port.default),),
        # Envoy starts each trace (or continues the client's) and exports its spans.
        otlp_endpoint=collector_url(),
    )


def collector_url() -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT of every process in the containers, and Envoy's tracer."""
    return f"http://{COLLECTOR.host}:{COLLECTOR.port}"


def replicas_host() -> str:
    """The DNS name that resolves to every ready Envoy of the edge."""
    return f"{_edge().name}-replicas"


def render_compose_edge(edge_settings: EdgeSettings | None = None) -> str:
    """The compose Envoy config (other settings only for tests, e.g. local file paths)."""
    return HEADER + render(edge_settings or settings())


def settings_here(
    edge_port: int | None = None, admin_port: int | None = None, tls_dir: Path | None = None
) -> EdgeSettings:
    """The compose settings with this checkout's files for the container mounts (to run
    or validate the compose config outside a container), and Envoy's identity from
    `tls_dir` (`python -m services.launcher.certs` layout) in place of the mounted one."""
    chosen = settings()
    return dataclasses.replace(
        chosen,
        edge_port=chosen.edge_port if edge_port is None else edge_port,
        admin_port=chosen.admin_port if admin_port is None else admin_port,
        descriptor_path=str(DESCRIPTOR_PATH),
        lua_path=str(LUA),
        upstream_tls=certs.files(tls_dir, certs.EDGE) if tls_dir is not None else None,
    )


def tls_env(name: str) -> dict[str, str]:
    """A container's SERVICE_TLS_* settings: its own identity under TLS_ROOT."""
    return certs.files(TLS_ROOT, name).env()


@dataclasses.dataclass(frozen=True)
class ComposeService:
    """What docker-compose.yml must say about one process of the topology."""

    name: str
    # `python -m ...` with its arguments; None: the image's own (infra, Envoy).
    command: tuple[str, ...] | None
    # Settings it must be given: the exact value, or None for any value.
    environment: Mapping[str, str | None]
    # Where its healthcheck dials inside the container, and the gRPC health service asked.
    health_port: int | None = None
    health_service: str | None = None
    # The published port (`host:container`), Envoy's edge only.
    published: str | None = None


def expected_service(process: Process) -> ComposeService:
    port = process.port
    if process.kind in (Kind.SERVER, Kind.WORKER):
        environment: dict[str, str | None] = dict.fromkeys(process.needs)
        environment[process.bind_setting] = f"0.0.0.0:{port.default}"
        if process.metrics_port is not None:
            environment[process.metrics_bind_setting] = f"0.0.0.0:{process.metrics_port.default}"
        # The gRPC port takes platform certificates only; the healthcheck asks the
        # plaintext health-only port.
        environment[process.health_bind_setting] = f"0.0.0.0:{process.probe_port}"
        environment.update(tls_env(process.name))
        environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector_url()
        return ComposeService(
            process.name,
            ("python", "-m", process.module),
            environment,
            health_port=process.probe_port,
            health_service=process.health,
        )
    if process.kind is Kind.STUB:
        command = ("python", "-m", "stubs", process.name, "--host", "0.0.0.0", "--port")
        return ComposeService(
            process.name, (*command, str(port.default)), {}, health_port=port.default
        )
    if process.kind is Kind.EDGE:
        published = f"${{{port.setting}:-{port.default}}}:{port.default}"
        return ComposeService(process.name, None, {}, published=published)
    # The official images listen on their own ports inside the compose network.
    return ComposeService(process.name, None, {})


def expected_services() -> dict[str, ComposeService]:
    """Every process of the topology as the compose service docker-compose.yml must have."""
    return {p.name: expected_service(p) for p in topology.PROCESSES}


def main() -> None:
    OUTPUT.write_text(render_compose_edge())
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
