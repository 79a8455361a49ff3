"""Reading request metadata and writing response headers, the same for every servicer.

HTTP headers arrive through Envoy's transcoder as lowercase gRPC metadata.
Response headers must go out as *initial* metadata (Envoy drops trailers on
REST responses); `x-http-code` asks the edge for a non-200 success status.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from services.kit import errors

# ASCII digits only: `\d` would also read other scripts' digits (U+0661) as versions.
# The quotes come in pairs: "3", W/"3", or a bare 3.
_ETAG = re.compile(r'(?:W/)?"([0-9]{1,9})"|([0-9]{1,9})')

Context = grpc.aio.ServicerContext[Any, Any]


def header(ctx: Context, name: str) -> str | None:
    """The value of one metadata entry (lowercase name), or None."""
    for key, value in ctx.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return None


def headers(ctx: Context, *names: str) -> tuple[str, ...]:
    """The values of several metadata entries (lowercase names), each the first one as
    `header` reads it, in one pass over the metadata; "" when absent."""
    found: dict[str, str] = {}
    for key, value in ctx.invocation_metadata() or ():
        if key in names and key not in found and isinstance(value, str):
            found[key] = value
    return tuple(found.get(name, "") for name in names)


def require_header(ctx: Context, name: str, http_name: str) -> str:
    """The header's value; InvalidArgument naming the HTTP header when absent or blank."""
    value = (header(ctx, name) or "").strip()
    if not value:
        raise errors.InvalidArgument.field(http_name, "header is required")
    return value


def if_match(ctx: Context) -> int | None:
    """The version named by `if-match` ("3", 3 or W/"3"), or None when absent."""
    raw = (header(ctx, "if-match") or "").strip()
    if not raw:
        return None
    match = _ETAG.fullmatch(raw)
    if match is None:
        raise errors.InvalidArgument.field("If-Match", 'must be a version such as "3"')
    return int(match.group(1) or match.group(2))


def require_if_match(ctx: Context) -> int:
    """The version named by `if-match`; PreconditionRequired when absent."""
    version = if_match(ctx)
    if version is None:
        raise errors.PreconditionRequired(
            'If-Match header is required: send the version you last saw, e.g. If-Match: "1"'
        )
    return version


def etag(version: int) -> str:
    """The strong ETag of a resource version."""
    return f'"{version}"'


async def send_headers(
    ctx: Context,
    *,
    http_status: int | None = None,
    version: int | None = None,
    replayed: bool = False,
    extra: dict[str, str] | None = None,
) -> None:
    """Send response headers as initial metadata: status hint, ETag, replay mark, others."""
    md: list[tuple[str, str]] = []
    if http_status is not None:
        md.append(("x-http-code", str(http_status)))
    if version is not None:
        md.append(("etag", etag(version)))
    if replayed:
        md.append(("idempotent-replayed", "true"))
    md.extend((extra or {}).items())
    if md:
        await ctx.send_initial_metadata(tuple(md))
