"""Rendering and starting the Envoy edge from envoy/edge.yaml and envoy/edge.lua."""

from __future__ import annotations

import json
import string
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from services.launcher import ROOT, procs
from services.launcher.codegen import DESCRIPTOR_PATH

TEMPLATE = ROOT / "envoy" / "edge.yaml"
LUA = ROOT / "envoy" / "edge.lua"

# Envoy's own replies (no route, bad JSON, body too large, upstream down, ...)
# in the platform's error model; the code string follows the HTTP status.
LOCAL_REPLY_CODES: list[tuple[int, str]] = [
    (400, "invalid_argument"),
    (401, "unauthenticated"),
    (403, "permission_denied"),
    (404, "not_found"),
    (408, "deadline_exceeded"),
    (413, "payload_too_large"),
    (429, "rate_limited"),
    (431, "invalid_argument"),
    (502, "unavailable"),
    (503, "unavailable"),
    (504, "deadline_exceeded"),
]


def _mapper(op: str, status: int, code: str) -> dict[str, object]:
    return {
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
                "details": {"reason": "%RESPONSE_CODE_DETAILS%", "domain": "edge"},
            },
            "content_type": "application/json",
        },
    }


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
    order_host: str
    order_port: int
    product_host: str
    product_port: int
    # The repo's own files by default; containers mount them elsewhere.
    descriptor_path: str = str(DESCRIPTOR_PATH)
    lua_path: str = str(LUA)
    otlp_endpoint: str | None = None


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


def render(settings: EdgeSettings, template: Path = TEMPLATE) -> str:
    """The Envoy config for these settings."""
    tracing, tracing_cluster = _tracing(settings.otlp_endpoint)
    return string.Template(template.read_text()).substitute(
        EDGE_ADDRESS=settings.edge_address,
        EDGE_PORT=settings.edge_port,
        ADMIN_ADDRESS=settings.admin_address,
        ADMIN_PORT=settings.admin_port,
        ORDER_HOST=settings.order_host,
        ORDER_PORT=settings.order_port,
        PRODUCT_HOST=settings.product_host,
        PRODUCT_PORT=settings.product_port,
        DESCRIPTOR_PATH=settings.descriptor_path,
        LUA_PATH=settings.lua_path,
        LOCAL_REPLY_MAPPERS=local_reply_mappers(),
        TRACING=tracing,
        TRACING_CLUSTER=tracing_cluster,
    )


CLUSTERS = ("order", "product")


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


def start_envoy(
    binary: str, settings: EdgeSettings, run_dir: Path, env: dict[str, str]
) -> procs.Proc:
    """Run Envoy (one worker: on 2 cores a second one steals CPU from Python) until ready."""
    config_path = run_dir / "envoy.yaml"
    config_path.write_text(render(settings))
    proc = procs.start(
        "envoy",
        [binary, "-c", str(config_path), "--concurrency", "1", "--disable-hot-restart",
         "--log-level", "warn"],
        log_dir=run_dir / "logs", env=env,
    )  # fmt: skip
    with procs.stop_on_error(proc):
        admin = f"http://{settings.admin_address}:{settings.admin_port}"
        procs.wait_until(proc, lambda: _get(f"{admin}/ready").strip() == "LIVE", what="Envoy ready")
        # The first request must not race the first upstream health checks.
        procs.wait_until(
            proc,
            lambda: all_healthy(_get(f"{admin}/clusters"), CLUSTERS),
            what=f"Envoy to see {', '.join(CLUSTERS)} healthy",
        )
    return proc
