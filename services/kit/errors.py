"""The platform's domain errors: one tree, mapped to gRPC in exactly one place.

    PlatformError                 internal
    ├── InvalidArgument           invalid_argument
    ├── Unauthenticated           unauthenticated
    ├── PermissionDenied          permission_denied
    ├── NotFound                  not_found
    ├── Conflict                  conflict            (a concurrent change)
    │   ├── StaleVersion          conflict            (If-Match names an old version)
    │   ├── AlreadyExists         conflict            (a unique name is taken)
    │   ├── IdempotencyKeyReused  conflict            (same key, different request)
    │   ├── InvalidTransition     conflict            (the resource is in the wrong state)
    │   └── InsufficientStock     insufficient_stock  (fewer units available than asked)
    ├── PreconditionFailed        precondition_failed
    ├── PreconditionRequired      precondition_required
    ├── PayloadTooLarge           payload_too_large   (HTTP 413)
    ├── RateLimited               rate_limited
    ├── Unavailable               unavailable
    │   └── CircuitOpen           unavailable         (failing fast: the upstream's breaker is open)
    └── DeadlineExceeded          deadline_exceeded

Business code raises these and imports nothing from gRPC; every `code` is a row
of `services.kit.error_model` (its gRPC and HTTP status), `services.kit.status`
maps each class to a gRPC status, and the edge maps the `code` string to HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

# The error-metadata key that says, in whole seconds, when a retry may succeed;
# the interceptor also sends it as the response's Retry-After header.
RETRY_AFTER = "retry-after"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request, reported back as google.rpc.BadRequest."""

    field: str
    description: str


class PlatformError(Exception):
    """Base of every error the platform reports to callers on purpose."""

    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        violations: tuple[FieldViolation, ...] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations
        self.metadata = metadata or {}


class InvalidArgument(PlatformError):
    code = "invalid_argument"

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """An error about one field, with the message naming it."""
        return cls(f"{field}: {description}", violations=(FieldViolation(field, description),))


class Unauthenticated(PlatformError):
    code = "unauthenticated"


class PermissionDenied(PlatformError):
    code = "permission_denied"


class NotFound(PlatformError):
    code = "not_found"


class Conflict(PlatformError):
    code = "conflict"


class StaleVersion(Conflict):
    """The optimistic lock: the version the client named is no longer current."""

    def __init__(self, current: int | None = None, message: str = "stale version") -> None:
        known = {"currentVersion": str(current)} if current is not None else None
        super().__init__(message, metadata=known)


class AlreadyExists(Conflict):
    pass


class IdempotencyKeyReused(Conflict):
    pass


class InvalidTransition(Conflict):
    pass


class InsufficientStock(Conflict):
    """A reservation asked for more units than are available (HTTP 409, FAILED_PRECONDITION)."""

    code = "insufficient_stock"


class PreconditionFailed(PlatformError):
    code = "precondition_failed"


class PreconditionRequired(PlatformError):
    code = "precondition_required"


class PayloadTooLarge(PlatformError):
    code = "payload_too_large"


class RateLimited(PlatformError):
    code = "rate_limited"


class Unavailable(PlatformError):
    code = "unavailable"


class CircuitOpen(Unavailable):
    pass


class DeadlineExceeded(PlatformError):
    code = "deadline_exceeded"
