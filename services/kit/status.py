"""The one place that turns a PlatformError into a rich gRPC status.

The status carries google.rpc.ErrorInfo (reason = the error's string code,
which the edge uses as the HTTP JSON `code`) and, for invalid input,
google.rpc.BadRequest with one violation per field.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.kit import error_model, errors

DOMAIN = "shop.platform"
ERROR_CODE_KEY = "x-error-code"


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


# A kit error is sent with its code's gRPC status (services.kit.error_model);
# these subclasses keep their code but tell gRPC callers more.
_REFINED: dict[type[errors.PlatformError], grpc.StatusCode] = {
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.IdempotencyKeyReused: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidTransition: grpc.StatusCode.FAILED_PRECONDITION,
}
# Every error class, general before specific (a reason's first class is its own).
ERROR_CLASSES: tuple[type[errors.PlatformError], ...] = (
    errors.PlatformError,
    errors.InvalidArgument,
    errors.Unauthenticated,
    errors.PermissionDenied,
    errors.NotFound,
    errors.Conflict,
    errors.StaleVersion,
    errors.InsufficientStock,
    errors.PreconditionFailed,
    errors.PreconditionRequired,
    errors.PayloadTooLarge,
    errors.RateLimited,
    errors.Unavailable,
    errors.CircuitOpen,
    errors.DeadlineExceeded,
)
STATUS_BY_ERROR: dict[type[errors.PlatformError], grpc.StatusCode] = {
    **{cls: error_model.BY_CODE[cls.code].grpc_status for cls in ERROR_CLASSES},
    **_REFINED,
}


def status_code_for(error: errors.PlatformError) -> grpc.StatusCode:
    """The gRPC code of the most specific mapped class in the error's MRO."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def to_grpc_status(error: errors.PlatformError) -> grpc.Status:
    """Build the rich status (code, message, ErrorInfo, BadRequest) for an error."""
    code = status_code_for(error)
    details: list[any_pb2.Any] = []
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=error.code, domain=DOMAIN, metadata=error.metadata)
    )
    details.append(info)
    if error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    status = rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=error.message, details=details)
    )
    # The edge reads the string code from metadata: its Lua filter must pick the
    # HTTP status before it may look at the body.
    return _Status(
        status.code, status.details, (*status.trailing_metadata, (ERROR_CODE_KEY, error.code))
    )


def internal_status(message: str = "internal error") -> grpc.Status:
    """The status for an unexpected failure; the cause stays in the logs."""
    return to_grpc_status(errors.PlatformError(message))
