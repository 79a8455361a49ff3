"""The error model as data: every string `code` a caller can see, its gRPC status
and its HTTP status, in one table.

The rest of the platform derives from (or is tested against) these rows:
`services.kit.status` sends a kit error with its code's gRPC status (a few
subclasses refine it), envoy/edge.lua's CODE_TO_HTTP and GRPC_TO_CODE tables
(checked by tests/unit/test_error_model.py), Envoy's own local replies
(services/launcher/edge.py) and the OpenAPI `Error.code` enum
(tools/openapi_errors.py). The row order is the OpenAPI enum's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

S = grpc.StatusCode


@dataclass(frozen=True)
class ErrorCode:
    """One code of the error model."""

    code: str
    # What a PlatformError with this code is sent as.
    grpc_status: grpc.StatusCode
    # What the edge answers a REST client with.
    http: int
    # gRPC statuses that arrive without an `x-error-code` (the gRPC runtime's own
    # failures) and that the edge reads as this code; each status in one row only.
    from_grpc: tuple[grpc.StatusCode, ...] = ()
    # HTTP statuses of Envoy's own replies (no route, body too large, upstream down)
    # that carry this code; any other 4xx/5xx reply is `internal`.
    edge_replies: tuple[int, ...] = ()


ERROR_MODEL: tuple[ErrorCode, ...] = (
    ErrorCode("invalid_argument", S.INVALID_ARGUMENT, 400,
              (S.INVALID_ARGUMENT, S.OUT_OF_RANGE), (400, 431)),
    ErrorCode("unauthenticated", S.UNAUTHENTICATED, 401, (S.UNAUTHENTICATED,), (401,)),
    ErrorCode("permission_denied", S.PERMISSION_DENIED, 403, (S.PERMISSION_DENIED,), (403,)),
    ErrorCode("not_found", S.NOT_FOUND, 404, (S.NOT_FOUND,), (404,)),
    ErrorCode("conflict", S.ABORTED, 409, (S.ABORTED, S.ALREADY_EXISTS)),
    ErrorCode("precondition_failed", S.FAILED_PRECONDITION, 412, (S.FAILED_PRECONDITION,)),
    ErrorCode("precondition_required", S.FAILED_PRECONDITION, 428),
    ErrorCode("payload_too_large", S.RESOURCE_EXHAUSTED, 413, (), (413,)),
    ErrorCode("rate_limited", S.RESOURCE_EXHAUSTED, 429, (S.RESOURCE_EXHAUSTED,), (429,)),
    ErrorCode("unavailable", S.UNAVAILABLE, 503, (S.UNAVAILABLE,), (502, 503)),
    ErrorCode("internal", S.INTERNAL, 500, (S.UNKNOWN, S.INTERNAL, S.DATA_LOSS)),
    ErrorCode("deadline_exceeded", S.DEADLINE_EXCEEDED, 504, (S.DEADLINE_EXCEEDED,), (408, 504)),
    ErrorCode("unimplemented", S.UNIMPLEMENTED, 501, (S.UNIMPLEMENTED,)),
    ErrorCode("cancelled", S.CANCELLED, 499, (S.CANCELLED,)),
    # Not a race to retry (ABORTED) but a state to wait out: the stock is not
    # there until a restock or a release changes it, hence FAILED_PRECONDITION.
    ErrorCode("insufficient_stock", S.FAILED_PRECONDITION, 409),
)  # fmt: skip

BY_CODE: dict[str, ErrorCode] = {row.code: row for row in ERROR_MODEL}
CODES: tuple[str, ...] = tuple(row.code for row in ERROR_MODEL)


def code_to_http() -> dict[str, int]:
    """envoy/edge.lua's CODE_TO_HTTP: the HTTP status of a service's string code."""
    return {row.code: row.http for row in ERROR_MODEL}


def grpc_to_code() -> dict[int, str]:
    """envoy/edge.lua's GRPC_TO_CODE: the string code of a bare gRPC status number."""
    return {s.value[0]: row.code for row in ERROR_MODEL for s in row.from_grpc}


def local_reply_codes() -> list[tuple[int, str]]:
    """Envoy's own replies' (HTTP status, code) pairs, by status."""
    return sorted((status, row.code) for row in ERROR_MODEL for status in row.edge_replies)
