"""Rendering and starting the Envoy edge from envoy/edge.yaml and envoy/edge.lua."""

from __future__ import annotations

import json
import string
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services import topology
from services.kit import error_model, identity
from services.kit.config import ServiceTls
from services.launcher import (
    ROOT,
    edge_capacity,
    edge_docs,
    edge_limits,
    edge_pages,
    edge_policy,
    edge_routes,
    procs,
)
from services.launcher.codegen import DESCRIPTOR_PATH
from services.launcher.edge_capacity import EdgeCapacity
from services.launcher.edge_limits import EdgeLimits
from services.launcher.edge_routes import Endpoint

TEMPLATE = ROOT / "envoy" / "edge.yaml"
LUA = ROOT / "envoy" / "edge.lua"

# Envoy's own replies (no route, bad JSON, body too large, upstream down, ...)
# in the platform's error model; the code string follows the HTTP status.
LOCAL_REPLY_CODES: list[tuple[int, str]] = error_model.local_reply_codes()


# Replies whose own body is empty or internal jargon get a message of their own.
LOCAL_REPLY_MESSAGES = {
    429: "too many requests: retry after the number of seconds in Retry-After",
}


def _mapper(op: str, status: int, code: str) -> dict[str, object]:
    mapper: dict[str, object] = {
        "filter": {
            "status_code_filter": {
                "comparison": {
                    "op": op,
                    "value": {"default_value": status, "runtime_key": f"edge.local_reply.{status}"},
                }
            }
        },
        "body_format_override": {
            "json_format": {
                "code": code,
                "message": "%LOCAL_REPLY_BODY%",
                # The services' shape: an array of google.rpc details, one ErrorInfo here
                # (Envoy 1.40's json_format substitutes inside lists).
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "%RESPONSE_CODE_DETAILS%",
                        "domain": "edge",
                        "metadata": {},
                    }
                ],
            },
            "content_type": "application/json",
        },
    }
    if status in LOCAL_REPLY_MESSAGES and op == "EQ":
        mapper["body"] = {"inline_string": LOCAL_REPLY_MESSAGES[status]}
    return mapper


def local_reply_mappers(indent: int = 20) -> str:
    """The local_reply_config mappers as YAML flow lines at the given indentation."""
    mappers = [_mapper("EQ", status, code) for status, code in LOCAL_REPLY_CODES]
    mappers.append(_mapper("GE", 400, "internal"))
    return "\n".join(" " * indent + "- " + json.dumps(m) for m in mappers)


@dataclass(frozen=True)
class EdgeSettings:
    """Where the edge listens and where it finds the services and its files."""

    edge_address: str
    edge_port: int
    admin_address: str
    admin_port: int
    # One endpoint per cluster of the topology (services/topology.py).
    upstreams: Mapping[str, Endpoint]
    jwt_issuer: str = "shop-platform"
    jwt_audience: str = "shop-api"
    limits: EdgeLimits = field(default_factory=EdgeLimits)
    capacity: EdgeCapacity = field(default_factory=EdgeCapacity)
    # The repo's own files by default; containers mount them elsewhere.
    descriptor_path: str = str(DESCRIPTOR_PATH)
    lua_path: str = str(LUA)
    otlp_endpoint: str | None = None
    # Envoy's service identity: mTLS to every cluster of the topology; None: plaintext.
    upstream_tls: ServiceTls | None = None
    # The OpenAPI documents and Swagger UI at /openapi/... and /docs; None serves neither.
    docs: edge_docs.DocsFiles | None = field(default_factory=edge_docs.DocsFiles.here)
    # Every Envoy of this edge, this one included, that shares the per-caller quotas;
    # None: this Envoy alone.
    replicas: Sequence[Endpoint] | None = None

    @property
    def jwks_host(self) -> str:
        """The address this Envoy reaches its own listener on."""
        return "127.0.0.1" if self.edge_address in ("0.0.0.0", "::") else self.edge_address

    @property
    def local_cluster(self) -> Sequence[Endpoint]:
        """The members of the edge's local cluster."""
        if self.replicas is None:
            return (Endpoint(self.jwks_host, self.edge_port),)
        return self.replicas


def _tracing(otlp_endpoint: str | None) -> tuple[str, str]:
    """With an OTLP collector, Envoy starts (or continues) each W3C trace and
    exports its spans; without one, a client's `traceparent` still passes to
    the services, which start the trace themselves."""
    if not otlp_endpoint:
        return "", ""
    url = urllib.parse.urlsplit(otlp_endpoint)
    tracing = """                tracing:
                  provider:
                    name: envoy.tracers.opentelemetry
                    typed_config:
                      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                      service_name: edge
                      grpc_service: {envoy_grpc: {cluster_name: otel_collector}, timeout: 1s}
"""
    cluster = f"""    - name: otel_collector
      type: STRICT_DNS
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{http2_protocol_options: {{}}}}
      load_assignment:
        cluster_name: otel_collector
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: {url.hostname}, port_value: {url.port or 4317}}}"""
    return tracing, cluster


def _flow(items: list[dict[str, Any]], indent: int) -> str:
    """YAML list items as one JSON flow line each (JSON is YAML)."""
    return "\n".join(" " * indent + "- " + json.dumps(item) for item in items)


def render(settings: EdgeSettings, template: Path = TEMPLATE) -> str:
    """The Envoy config for these settings."""
    tracing, tracing_cluster = _tracing(settings.otlp_endpoint)
    jwks_uri = f"http://{settings.jwks_host}:{settings.edge_port}/.well-known/jwks.json"
    return string.Template(template.read_text()).substitute(
        EDGE_ADDRESS=settings.edge_address,
        EDGE_PORT=settings.edge_port,
        ADMIN_ADDRESS=settings.admin_address,
        ADMIN_PORT=settings.admin_port,
        JWKS_HOST=settings.jwks_host,
        DESCRIPTOR_PATH=settings.descriptor_path,
        LUA_PATH=settings.lua_path,
        LOCAL_REPLY_MAPPERS=local_reply_mappers(),
        DOCS_ROUTES=_flow(edge_docs.routes(settings.docs), 24) if settings.docs else "",
        PAGE_ROUTES=_flow(edge_pages.routes(), 24),
        ROUTES=_flow(edge_routes.routes(settings.limits), 24),
        TRANSCODED_SERVICES=json.dumps([s.name for s in edge_policy.services()]),
        IDENTITY_STRIP=json.dumps(edge_policy.identity_strip()),
        JWT_AUTHN=json.dumps(
            edge_policy.jwt_authn(settings.jwt_issuer, settings.jwt_audience, jwks_uri)
        ),
        RBAC=json.dumps(edge_policy.rbac()),
        ADDRESS_LIMIT=json.dumps(edge_limits.address_limit(settings.limits)),
        USER_LIMIT=json.dumps(edge_limits.user_limit(settings.limits, identity.USER_HEADER)),
        LOCAL_CLUSTER=edge_limits.LOCAL_CLUSTER,
        CLUSTERS=_flow(
            [
                *edge_routes.clusters(settings.upstreams, settings.upstream_tls),
                edge_routes.local_cluster(settings.local_cluster),
            ],
            4,
        ),
        TRACING=tracing,
        TRACING_CLUSTER=tracing_cluster,
        **edge_capacity.placeholders(settings.capacity),
    )


def all_healthy(clusters: str, names: tuple[str, ...]) -> bool:
    """Whether Envoy's /clusters text shows every named cluster's hosts healthy."""
    flags: dict[str, list[str]] = {}
    for line in clusters.splitlines():
        name, _, rest = line.partition("::")
        if name in names and "::health_flags::" in rest:
            flags.setdefault(name, []).append(rest.rsplit("::", 1)[1])
    return all(flags.get(n) and all(f == "healthy" for f in flags[n]) for n in names)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=1) as response:
        return str(response.read().decode())


def _counter(admin: str, name: str) -> int:
    """One counter from Envoy's admin /stats (0 when it is not there yet)."""
    text = _get(f"{admin}/stats?filter=^{urllib.parse.quote(name)}$")
    _, _, value = text.strip().partition(": ")
    return int(value or 0)


# Envoy's own log lines as JSON objects, like its access log and every other process's
# (%j: the message escaped for JSON).
LOG_FORMAT = '{"ts":"%Y-%m-%dT%T.%eZ","level":"%l","service":"edge","logger":"%n","msg":"%j"}'


def start_envoy(
    binary: str, settings: EdgeSettings, run_dir: Path, env: dict[str, str]
) -> procs.Proc:
    """Run Envoy (one worker: on 2 cores a second one steals CPU from Python) until ready."""
    config_path = run_dir / "envoy.yaml"
    config_path.write_text(render(settings))
    proc = procs.start(
        "envoy",
        [binary, "-c", str(config_path), "--concurrency", "1", "--disable-hot-restart",
         "--log-level", "warn", "--log-format", LOG_FORMAT],
        log_dir=run_dir / "logs", env=env,
    )  # fmt: skip
    with procs.stop_on_error(proc):
        admin = f"http://{settings.admin_address}:{settings.admin_port}"
        procs.wait_until(proc, lambda: _get(f"{admin}/ready").strip() == "LIVE", what="Envoy ready")
        # The first request must not race the first upstream health checks.
        clusters = tuple(topology.clusters())
        procs.wait_until(
            proc,
            lambda: all_healthy(_get(f"{admin}/clusters"), clusters),
            what=f"Envoy to see {', '.join(clusters)} healthy",
        )
        # Until then every token would be refused: the keys are not known yet.
        procs.wait_until(
            proc,
            lambda: _counter(admin, "http.edge.jwt_authn.jwks_fetch_success") > 0,
            what="Envoy to fetch the JWKS",
        )
    return proc
