"""The edge's routes and upstream clusters, generated from the services table.

Routes match gRPC paths (the transcoder rewrites a REST request's path before
routing), so one route serves a method over REST and native gRPC alike. Each
carries a local token bucket: this Envoy sheds load before a Python process
saturates, and login and registration (an Argon2 hash each) get a tight one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.launcher import edge_policy


@dataclass(frozen=True)
class Endpoint:
    """Where one upstream cluster's server listens."""

    host: str
    port: int


# The gRPC clusters and the service each one's health check asks about.
GRPC_CLUSTERS = {
    "order": "shop.order.v1.OrderService",
    "product": "shop.product.v1.ProductService",
    "user": "shop.user.v1.UserService",
    "event": "shop.event.v1.EventService",
    "ratelimit": "envoy.service.ratelimit.v3.RateLimitService",
}
CLUSTERS = tuple(GRPC_CLUSTERS)
# Login and registration get a tight local bucket: they cost an Argon2 hash.
CREDENTIAL_METHODS = ("/shop.user.v1.UserService/Login", "/shop.user.v1.UserService/Register")


@dataclass(frozen=True)
class EdgeLimits:
    """Per-route local token buckets of one Envoy (requests per second, burst twice that)."""

    route_rps: int = 500
    credentials_rps: int = 10


def local_limit(name: str, rps: int) -> dict[str, Any]:
    full = {"numerator": 100, "denominator": "HUNDRED"}
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": f"route_{name}",
        "token_bucket": {"max_tokens": 2 * rps, "tokens_per_fill": rps, "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": "edge.local_limit.enabled", "default_value": full},
        "filter_enforced": {"runtime_key": "edge.local_limit.enforced", "default_value": full},
        # The bucket refills every second.
        "response_headers_to_add": [
            {
                "header": {"key": "retry-after", "value": "1"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def routes(limits: EdgeLimits) -> list[dict[str, Any]]:
    by_name = {s.name: s for s in edge_policy.SERVICES}
    user = by_name["shop.user.v1.UserService"]
    routes: list[dict[str, Any]] = []
    for path in CREDENTIAL_METHODS:
        method = path.rsplit("/", 1)[1].lower()
        routes.append({
            "match": {"path": path},
            "route": {"cluster": user.cluster, "timeout": user.timeout},
            "typed_per_filter_config": {
                "envoy.filters.http.local_ratelimit": local_limit(method, limits.credentials_rps),
                # Attempts per client address too, on top of the virtual host's limits.
                "envoy.filters.http.ratelimit": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
                    "vh_rate_limits": "INCLUDE",
                    "rate_limits": [{"actions": [
                        {"generic_key": {"descriptor_value": method}}, {"remote_address": {}},
                    ]}],
                },
            },
        })  # fmt: skip
    for service in edge_policy.SERVICES:
        routes.append({
            "match": {"prefix": f"/{service.name}/"},
            "route": {"cluster": service.cluster, "timeout": service.timeout},
            "typed_per_filter_config": {
                "envoy.filters.http.local_ratelimit": local_limit(service.cluster, limits.route_rps)
            },
        })  # fmt: skip
    return routes


def clusters(upstreams: Mapping[str, Endpoint]) -> list[dict[str, Any]]:
    return [
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
        for name, service in GRPC_CLUSTERS.items()
    ]
