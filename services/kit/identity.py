"""Who is calling: the identity the edge verified, and the access policy of each method.

The edge checks the access token (signature, issuer, audience, expiry) and
forwards its claims as metadata: `x-user-id` (sub), `x-tenant-id` (tenant)
and `x-user-role` (role). It strips client-sent copies of those, and passes a
client's own `X-Tenant-Id` on as `x-requested-tenant-id`, so a service can
refuse a request whose named tenant disagrees with the token's. Without a
token (public methods) the requested tenant is the tenant.

The service trusts that metadata because only platform workloads reach its
port: with service TLS configured (services/kit/tls.py, `./shop up`, compose
and Kubernetes) the port refuses, in the TLS handshake, every client without a
certificate of the platform CA, so a forged `x-user-id` from anyone else never
arrives. Platform callers that act for someone (a service calling another,
`grpc_client.Acting`; the launcher's tests) set the same `x-*` metadata
themselves. A server started bare (integration tests) is plaintext and trusts
whoever reaches it: only ever bind such a one to 127.0.0.1.

Each method's `shop.api.v1.access` option says who may call it; the edge's
rules are generated from it and the interceptor enforces it again here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from shop.api.v1 import access_pb2

from services.kit import context, errors

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ADMIN = "admin"
CUSTOMER = "customer"
ROLES = (CUSTOMER, ADMIN)

USER_HEADER = "x-user-id"
TENANT_HEADER = "x-tenant-id"
ROLE_HEADER = "x-user-role"
REQUESTED_TENANT_HEADER = "x-requested-tenant-id"


@dataclass(frozen=True)
class Identity:
    """The caller of one request: a verified user, or anonymous (user_id None)."""

    user_id: str | None
    tenant_id: str
    role: str | None

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def valid_tenant(self) -> str:
        """The tenant, validated; InvalidArgument naming X-Tenant-Id when there is none."""
        if not self.tenant_id:
            raise errors.InvalidArgument.field("X-Tenant-Id", "header is required")
        return valid_tenant(self.tenant_id, "X-Tenant-Id")

    def required_user(self) -> str:
        """The user id; Unauthenticated when the request names none."""
        if self.user_id is None:
            raise errors.Unauthenticated("a valid access token is required")
        return self.user_id


def claimed_tenant(md: Mapping[str, str]) -> str:
    """The tenant a request names: the token's, else the one the client asked for."""
    return md.get(TENANT_HEADER) or md.get(REQUESTED_TENANT_HEADER, "").strip()


def from_metadata(metadata: Iterable[tuple[str, Any]]) -> Identity:
    """The caller named by request metadata; PermissionDenied when the client's
    X-Tenant-Id disagrees with the token's tenant."""
    return _from_mapping({k: v for k, v in metadata if isinstance(v, str)})


def _from_mapping(md: Mapping[str, str]) -> Identity:
    user = md.get(USER_HEADER) or None
    verified = md.get(TENANT_HEADER, "")
    requested = md.get(REQUESTED_TENANT_HEADER, "").strip()
    if user is not None and not verified:
        raise errors.Unauthenticated("the access token names no tenant")
    if verified and requested and requested != verified:
        raise errors.PermissionDenied("X-Tenant-Id does not match the access token's tenant")
    return Identity(user, claimed_tenant(md), md.get(ROLE_HEADER) or None)


def of(ctx: grpc.aio.ServicerContext[Any, Any]) -> Identity:
    """The caller of the current RPC (read once per call when the kit's interceptor
    serves it; a refusal is raised again on every read)."""
    call = context.call.get()
    if call is None or call.ctx is not ctx:
        return from_metadata(ctx.invocation_metadata() or ())
    if call.identity is None:
        call.identity = _from_mapping(call.metadata)
    found: Identity = call.identity
    return found


def tenant(ctx: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's tenant, validated; InvalidArgument naming X-Tenant-Id when there is none."""
    return of(ctx).valid_tenant()


def user(ctx: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's user id; Unauthenticated when the request names none."""
    return of(ctx).required_user()


def valid_tenant(value: str, field: str) -> str:
    """`value` if it is a tenant name; InvalidArgument naming `field` otherwise."""
    if not value:
        raise errors.InvalidArgument.field(field, "is required")
    if not TENANT_PATTERN.match(value):
        raise errors.InvalidArgument.field(field, "must be 1-64 letters, digits, '.', '_' or '-'")
    return value


def method_access(service_names: Iterable[str]) -> dict[str, int]:
    """The access level of every method of the named services, by gRPC path."""
    pool = descriptor_pool.Default()
    levels: dict[str, int] = {}
    for name in service_names:
        for method in pool.FindServiceByName(name).methods:
            # The generated stub types the extension as a plain FieldDescriptor.
            level: int = method.GetOptions().Extensions[access_pb2.access]  # type: ignore[index]
            levels[f"/{name}/{method.name}"] = level or access_pb2.ACCESS_AUTHENTICATED
    return levels


def enforce(level: int, caller: Identity) -> None:
    """Refuse a caller the method's access level does not admit."""
    if level == access_pb2.ACCESS_PUBLIC:
        return
    if not caller.authenticated:
        raise errors.Unauthenticated("a valid access token is required")
    if level == access_pb2.ACCESS_ADMIN and not caller.is_admin:
        raise errors.PermissionDenied("this operation is for admins")
