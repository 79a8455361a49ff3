"""Fakes of the systems outside the platform (ERP, Warehouse, Routing, Payment provider,
notifications), each its own process.

Run one with `python -m stubs <name>`. What they share lives here: the upstream
error body, deliberately not the platform's (the gateway maps it),

    {"error": {"code": "<word>", "message": "..."}}

the required `X-Tenant-Id` header, strict JSON input, RFC 3339 UTC timestamps
and the records kept per required `Idempotency-Key` (`Keyed`). Fault injection
and the `/_admin/` API are in `stubs.faults`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

from aiohttp import web

SKU = re.compile(r"[A-Z0-9][A-Z0-9-]{0,63}")
TENANT_HEADER = "X-Tenant-Id"
MAX_INT32 = 2**31 - 1
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


class UpstreamError(Exception):
    """A request the stub refuses: its HTTP status, upstream error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message)


def bad_request(message: str) -> UpstreamError:
    return UpstreamError(400, "bad_request", message)


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


# aiohttp's own refusals (no route, wrong method, body too large) in the upstream format.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@web.middleware
async def upstream_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer UpstreamError and aiohttp's HTTP errors with the upstream error body."""
    try:
        return await handler(request)
    except UpstreamError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        default = "bad_request" if exc.status < 500 else "internal"
        response = error_response(exc.status, _HTTP_CODES.get(exc.status, default), exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


def tenant_of(request: web.Request) -> str:
    """The tenant a business request is scoped to; 400 without one."""
    tenant = request.headers.get(TENANT_HEADER, "").strip()
    if not 0 < len(tenant) <= 128 or not tenant.isascii() or not tenant.isprintable():
        raise bad_request(f"{TENANT_HEADER} header is required (1-128 printable ASCII characters)")
    return tenant


def idempotency_key(request: web.Request) -> str:
    """The required `Idempotency-Key` header; 400 without a usable one."""
    key = request.headers.get("Idempotency-Key", "")
    if not 0 < len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise bad_request("Idempotency-Key header is required (1-255 printable ASCII characters)")
    return key


def fingerprint(request: Any) -> str:
    """What a replay must match: a parsed request's meaning (a dataclass), not its JSON spelling."""
    text = json.dumps(dataclasses.asdict(request), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Keyed(Generic[T]):
    """What was made under each (tenant, Idempotency-Key), with the request that made it.

    No method awaits: a handler that checks `made` and then calls `remember`
    without awaiting in between makes one record per key, however many requests
    carry it at once.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._made: dict[tuple[str, str], tuple[str, T]] = {}

    def made(self, tenant: str, key: str, request_fingerprint: str) -> T | None:
        """The record made under this key, or None; 409 when the key came with another request."""
        stored = self._made.get((tenant, key))
        if stored is None:
            return None
        if stored[0] != request_fingerprint:
            message = f"Idempotency-Key was already used for a different {self._what}"
            raise UpstreamError(409, "idempotency_conflict", message)
        return stored[1]

    def get(self, tenant: str, key: str) -> T | None:
        """The record made under this key, whatever the request; None when never seen."""
        stored = self._made.get((tenant, key))
        return None if stored is None else stored[1]

    def remember(self, tenant: str, key: str, request_fingerprint: str, record: T) -> None:
        self._made[tenant, key] = (request_fingerprint, record)

    def clear(self) -> None:
        self._made.clear()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object; 400 when it is not one."""
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad_request(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad_request("body must be a JSON object")
    return value


def only_fields(body: Mapping[str, Any], allowed: Collection[str]) -> None:
    """400 when the body has fields outside `allowed`."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise bad_request(f"unknown fields: {', '.join(unknown)}")


def int_field(
    body: Mapping[str, Any],
    name: str,
    *,
    low: int = 0,
    high: int = MAX_INT32,
    default: int | None = None,
) -> int:
    """An integer field (a bool is not one) within low..high; 400 otherwise."""
    value = body.get(name, default)
    if value is None:
        raise bad_request(f"{name} is required")
    if type(value) is not int or not low <= value <= high:
        raise bad_request(f"{name} must be an integer in {low}..{high}")
    return value


def str_field(
    body: Mapping[str, Any], name: str, *, low: int, high: int, default: str | None = None
) -> str:
    """A string field of low..high characters; 400 otherwise."""
    value = body.get(name, default)
    if value is None:
        raise bad_request(f"{name} is required")
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise bad_request(f"{name} must be a string of {low}..{high} characters")
    return value


def sku_of(value: object) -> str:
    """A SKU (`[A-Z0-9][A-Z0-9-]{0,63}`); 400 otherwise."""
    if not isinstance(value, str) or not SKU.fullmatch(value):
        raise bad_request(f"sku must match {SKU.pattern}, got {value!r}")
    return value


def utc_now() -> datetime:
    """Now, to the second: the precision every stub timestamp has."""
    return datetime.now(UTC).replace(microsecond=0)


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: object) -> datetime:
    """An RFC 3339 UTC timestamp ending in `Z`; 400 otherwise."""
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise bad_request(
            f"timestamp must be RFC 3339 UTC like 2026-01-01T00:00:00Z, got {value!r}"
        )
    return datetime.fromisoformat(value)


def read_seed(path: Path) -> dict[str, Any]:
    """The `tenants` object of a seed file: tenant id to that tenant's data."""
    tenants = json.loads(path.read_text()).get("tenants")
    if not isinstance(tenants, dict):
        raise ValueError(f"{path}: expected {{'tenants': {{...}}}}")
    return tenants
