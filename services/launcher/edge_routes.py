"""The edge's routes and upstream clusters, generated from the topology (services/topology.py).

Routes match gRPC paths (the transcoder rewrites a REST request's path before
routing), so one route serves a method over REST and native gRPC alike. Each
carries a local token bucket: this Envoy sheds load before a Python process
saturates, and login and registration (an Argon2 hash each) get a tight one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services import topology
from services.kit.config import ServiceTls
from services.launcher import edge_policy
from services.launcher.edge_limits import (
    LOCAL_CLUSTER,
    EdgeLimits,
    credentials_limit,
    route_bucket,
)


@dataclass(frozen=True)
class Endpoint:
    """Where one upstream cluster's server listens."""

    host: str
    port: int

    @classmethod
    def of(cls, target: str) -> Endpoint:
        """The endpoint of a `host:port` target."""
        host, _, port = target.rpartition(":")
        return cls(host, int(port))


# Login and registration get a tight local bucket: they cost an Argon2 hash.
CREDENTIAL_METHODS = ("/shop.user.v1.UserService/Login", "/shop.user.v1.UserService/Register")


def routes(limits: EdgeLimits) -> list[dict[str, Any]]:
    services = edge_policy.services()
    by_name = {s.name: s for s in services}
    routes: list[dict[str, Any]] = []
    for path in CREDENTIAL_METHODS:
        method = path.rsplit("/", 1)[1].lower()
        user = by_name[path.split("/")[1]]
        timeout = user.method_timeouts.get(path, user.timeout)
        routes.append({
            "match": {"path": path},
            "route": {"cluster": user.cluster, "timeout": timeout},
            "typed_per_filter_config": {
                "envoy.filters.http.local_ratelimit": route_bucket(method, limits.credentials_rps),
                # Attempts per client address, counted exactly by the rate-limit service:
                # the only routes that call it.
                "envoy.filters.http.ratelimit": credentials_limit(method),
            },
        })  # fmt: skip
    for service in services:
        shaped = [*service.method_timeouts, *service.success_status, *service.success_headers]
        for path in dict.fromkeys(shaped):
            if path in CREDENTIAL_METHODS:
                continue
            timeout = service.method_timeouts.get(path, service.timeout)
            route: dict[str, Any] = {
                "match": {"path": path},
                "route": {"cluster": service.cluster, "timeout": timeout},
                "typed_per_filter_config": {
                    "envoy.filters.http.local_ratelimit": route_bucket(
                        service.cluster, limits.route_rps
                    )
                },
            }
            metadata = success_metadata(
                service.success_status.get(path), service.success_headers.get(path)
            )
            if metadata:
                route["metadata"] = metadata
            routes.append(route)
    for service in services:
        routes.append({
            "match": {"prefix": f"/{service.name}/"},
            "route": {"cluster": service.cluster, "timeout": service.timeout},
            "typed_per_filter_config": {
                "envoy.filters.http.local_ratelimit": route_bucket(service.cluster, limits.route_rps)
            },
        })  # fmt: skip
    return routes


def success_metadata(status: int | None, headers: Mapping[str, str] | None) -> dict[str, Any]:
    """Route metadata that envoy/edge.lua reads (empty when there is none): the REST
    status of a success the service sent no `x-http-code` for, and the headers a
    success gets unless the service sent them."""
    lua: dict[str, Any] = {}
    if status is not None:
        lua["success_status"] = str(status)
    if headers:
        lua["success_headers"] = dict(headers)
    return {"filter_metadata": {"envoy.filters.http.lua": lua}} if lua else {}


def transport_socket(name: str, tls: ServiceTls) -> dict[str, Any]:
    """mTLS to one service: Envoy's certificate, the platform CA, and the service's own
    name in its certificate; ALPN h2, without which a gRPC server refuses the handshake."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(tls.cert)},
                        "private_key": {"filename": str(tls.key)},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(tls.ca)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": name}}
                    ],
                },
            },
        },
    }


def clusters(
    upstreams: Mapping[str, Endpoint], tls: ServiceTls | None = None
) -> list[dict[str, Any]]:
    """One cluster per topology process with `cluster`, health-checked by its health service,
    over mTLS with Envoy's service identity `tls` (plaintext without)."""
    found: list[dict[str, Any]] = [
        {
            "name": name,
            "type": "STRICT_DNS",
            "connect_timeout": "2s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "health_checks": [
                {
                    "timeout": "1s",
                    "interval": "5s",
                    "unhealthy_threshold": 2,
                    "healthy_threshold": 1,
                    "grpc_health_check": {"service_name": service},
                }
            ],
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": upstreams[name].host,
                                            "port_value": upstreams[name].port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
        for name, service in topology.clusters().items()
    ]
    if tls is not None:
        for cluster in found:
            cluster["transport_socket"] = transport_socket(str(cluster["name"]), tls)
    return found


def local_cluster(replicas: Sequence[Endpoint]) -> dict[str, Any]:
    """The cluster of the edge's own Envoys, which shares the per-caller quotas out
    (services/launcher/edge_limits.py). Envoy counts its hosts healthy or not
    (membership_total), so it is never health-checked and nothing is sent to it; a
    DNS name (a headless Service) lists every replica that is ready."""
    return {
        "name": LOCAL_CLUSTER,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "dns_refresh_rate": "5s",
        "load_assignment": {
            "cluster_name": LOCAL_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": r.host, "port_value": r.port}
                                }
                            }
                        }
                        for r in replicas
                    ]
                }
            ],
        },
    }
