"""The edge's access policy, generated from the contracts' `shop.api.v1.access` options.

jwt_authn and RBAC run after the transcoder, so they see every call, REST or
native gRPC, under its gRPC path (`/pkg.Service/Method`): one rule per method
covers both, and a REST path can never bypass a rule written for gRPC.
Anything not named here (another path, a new method without the option)
needs a valid token: the policy fails closed.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shop.api.v1 import access_pb2

from services import topology
from services.kit import identity
from services.launcher import edge_pages

PROVIDER = "shop"
PAYLOAD_KEY = "jwt_payload"
JWT_FILTER = "envoy.filters.http.jwt_authn"
# Paths the edge answers itself, outside every service.
EDGE_PATHS = ("/healthz",)
# And the API reference (services/launcher/edge_docs.py): /docs, /docs/assets/...,
# /openapi/<package>.json. No gRPC method path starts so.
EDGE_PREFIXES = ("/docs", "/openapi/")
# And the pages (services/launcher/edge_pages.py), matched whole: /orders/{id}/live.
EDGE_PATTERNS = (edge_pages.LIVE_PATH,)


@dataclass(frozen=True)
class Service:
    """One gRPC service behind the edge: where it runs and how long a call may take."""

    name: str
    module: str  # the generated module that defines it
    cluster: str
    timeout: str
    # Full gRPC paths whose route gets a timeout of its own.
    method_timeouts: Mapping[str, str] = field(default_factory=dict)
    # Full gRPC paths whose REST success status is not 200 unless the service says so.
    success_status: Mapping[str, int] = field(default_factory=dict)
    # Full gRPC paths whose REST success carries these headers unless the service sent them.
    success_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def services() -> tuple[Service, ...]:
    """Every gRPC service the edge routes, from the topology (services/topology.py)."""
    return tuple(
        Service(
            exposed.name,
            exposed.module,
            process.name,
            exposed.timeout,
            {f"/{exposed.name}/{m}": t for m, t in exposed.method_timeouts.items()},
            {f"/{exposed.name}/{m}": s for m, s in exposed.success_status.items()},
            {f"/{exposed.name}/{m}": h for m, h in exposed.success_headers.items()},
        )
        for process, exposed in topology.exposed()
    )


def method_access(of: Iterable[Service] | None = None) -> dict[str, int]:
    """The access level of every method behind the edge, by gRPC path."""
    chosen = list(services() if of is None else of)
    for service in chosen:
        importlib.import_module(service.module)  # registers it in the default pool
    return identity.method_access(s.name for s in chosen)


def _path(path: str) -> dict[str, Any]:
    return {"path": path}


def jwt_authn(issuer: str, audience: str, jwks_uri: str) -> dict[str, Any]:
    """The jwt_authn filter: tokens checked against the user service's JWKS."""
    access = method_access()
    optional = {
        "requires_any": {"requirements": [{"provider_name": PROVIDER}, {"allow_missing": {}}]}
    }
    rules: list[dict[str, Any]] = [{"match": _path(p)} for p in EDGE_PATHS]
    rules += [{"match": {"prefix": p}} for p in EDGE_PREFIXES]
    rules += [{"match": {"safe_regex": {"regex": p}}} for p in EDGE_PATTERNS]
    rules += [
        {"match": _path(path), "requires": optional}
        for path, level in sorted(access.items())
        if level == access_pb2.ACCESS_PUBLIC
    ]
    rules.append({"match": {"prefix": "/"}, "requires": {"provider_name": PROVIDER}})
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {
            PROVIDER: {
                "issuer": issuer,
                "audiences": [audience],
                "remote_jwks": {
                    "http_uri": {"uri": jwks_uri, "cluster": "jwks", "timeout": "2s"},
                    # Rotation: a new key is published before it signs, so a
                    # refetch every 5 minutes is enough; failed fetches retry.
                    "cache_duration": "300s",
                    "async_fetch": {"fast_listener": True, "failed_refetch_duration": "1s"},
                    "retry_policy": {"num_retries": 3},
                },
                # The services get the verified claims, never the token.
                "forward": False,
                "claim_to_headers": [
                    {"header_name": identity.USER_HEADER, "claim_name": "sub"},
                    {"header_name": identity.TENANT_HEADER, "claim_name": "tenant"},
                    {"header_name": identity.ROLE_HEADER, "claim_name": "role"},
                ],
                # The Authorization header only: jwt_authn's default also takes
                # `?access_token=`, which puts tokens in URLs and logs (RFC 6750 5.3).
                # The Lua filter makes the scheme's case not matter (RFC 7235).
                "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                "payload_in_metadata": PAYLOAD_KEY,
                "clock_skew_seconds": 30,
                # A token seen before skips the signature check (bench/edge_auth.py:
                # ~86 us of Envoy CPU per request without it); expiry is still checked.
                "jwt_cache_config": {"jwt_cache_size": 10000},
            }
        },
        "rules": rules,
    }


def rbac() -> dict[str, Any]:
    """The RBAC filter: admin methods only for tokens whose role claim is admin."""
    admin_paths = sorted(
        path for path, level in method_access().items() if level == access_pb2.ACCESS_ADMIN
    )
    role = {
        "filter": JWT_FILTER,
        "path": [{"key": PAYLOAD_KEY}, {"key": "role"}],
        "value": {"string_match": {"exact": identity.ADMIN}},
    }
    not_admin_only = {
        "not_rule": {
            "or_rules": {"rules": [{"url_path": {"path": {"exact": p}}} for p in admin_paths]}
        }
    }
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {
            "action": "ALLOW",
            "policies": {
                "not-admin-only": {"permissions": [not_admin_only], "principals": [{"any": True}]},
                "admin": {
                    "permissions": [{"any": True}],
                    "principals": [{"sourced_metadata": {"metadata_matcher": role}}],
                },
            },
        },
    }


def identity_strip() -> dict[str, Any]:
    """The header_mutation filter that runs before jwt_authn: no client-sent identity
    survives, and a client's X-Tenant-Id is kept as the tenant it asked for."""

    def remove(name: str) -> dict[str, str]:
        return {"remove": name}

    requested = {
        "append": {
            "header": {"key": identity.REQUESTED_TENANT_HEADER, "value": "%REQ(x-tenant-id)%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    }
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {
            "request_mutations": [
                remove(identity.REQUESTED_TENANT_HEADER),
                requested,
                remove(identity.TENANT_HEADER),
                remove(identity.USER_HEADER),
                remove(identity.ROLE_HEADER),
            ]
        },
    }
