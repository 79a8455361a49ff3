"""The kit's gRPC client: how a platform process calls another platform service.

    channel = grpc_client.dial(target, config.server.tls)
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    reply = await stub.Reserve(request, metadata=grpc_client.acting_as(identity))

Every unary call through a `dial`ed channel:
- carries the request id and the W3C trace context of the caller (a CLIENT span
  per call, child of the active span), so one trace spans both services;
- never waits past the caller's deadline (`services.kit.context.deadline`): the
  call's timeout is the smaller of its own and what the caller has left;
- is counted in the gRPC ecosystem's client metrics (`grpc_client_started_total`,
  `grpc_client_handled_total`, `grpc_client_handling_seconds`).

With the process's service TLS (`ServerConfig.tls`) the channel presents its
certificate and trusts only servers the platform CA issued, for the name
dialled (services/kit/tls.py); without it the channel is plaintext.

A failed call's status comes back as the platform error the callee raised
(`platform_error`): the ErrorInfo reason names the kit's error class, so an
`insufficient_stock` in the inventory service is `errors.InsufficientStock` in
the caller, and the error model answers it the same way at the edge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import propagate, trace

from services.kit import context, errors, metrics, status, tls
from services.kit.config import ServiceTls

_tracer = trace.get_tracer("services.kit.grpc_client")

# A platform error's class by the ErrorInfo reason it is sent with: the classes the
# kit's status mapping knows, the most general one of a shared reason (`conflict` is
# Conflict). A callee's `internal` is not among them: it reaches the caller's callers
# as the dependency being unavailable.
_BY_REASON: dict[str, type[errors.PlatformError]] = {}
for _cls in status.ERROR_CLASSES:
    if _cls is not errors.PlatformError:
        _BY_REASON.setdefault(_cls.code, _cls)

# Transport failures that say nothing about the request: the callee is away.
_AWAY = {
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.CANCELLED: errors.Unavailable,
}


@dataclass(frozen=True)
class Acting:
    """Who a call acts as: the identity metadata the callee's interceptors read."""

    tenant: str
    user: str
    admin: bool = False

    def metadata(self) -> tuple[tuple[str, str], ...]:
        md = [("x-tenant-id", self.tenant), ("x-user-id", self.user)]
        if self.admin:
            md.append(("x-user-role", "admin"))
        return tuple(md)


def service_identity(name: str, tenant: str) -> Acting:
    """A platform service acting tenant-wide for one tenant (`service:<name>`, admin)."""
    return Acting(tenant, f"service:{name}", admin=True)


def platform_error(exc: grpc.aio.AioRpcError) -> errors.PlatformError:
    """The platform error a failed call reports: by its ErrorInfo reason, else by its code."""
    message = exc.details() or exc.code().name.lower()
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                cls = _BY_REASON.get(info.reason)
                if cls is not None:
                    return cls(message, metadata=dict(info.metadata))
    away = _AWAY.get(exc.code())
    if away is not None:
        return away(f"the service did not answer: {message}")
    return errors.Unavailable(f"the service failed: {exc.code().name}")


def _timeout(own: float | None) -> float | None:
    left = context.deadline.get()
    if left is None:
        return own
    remaining = max(left - time.monotonic(), 0.001)
    return remaining if own is None else min(own, remaining)


class _Calls(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        raw: Any = details.method
        method = raw.decode() if isinstance(raw, bytes) else str(raw)
        service, _, name = method.lstrip("/").rpartition("/")
        labels = (service, name, "unary")
        metrics.GRPC_CLIENT_STARTED.labels(*labels).inc()
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        with _tracer.start_as_current_span(
            method.lstrip("/"), kind=trace.SpanKind.CLIENT, attributes={"rpc.system": "grpc"}
        ) as span:
            carried: dict[str, str] = {}
            propagate.inject(carried)
            md = grpc.aio.Metadata(*(details.metadata or ()))
            request_id = context.request_id.get()
            if request_id:
                md.add("x-request-id", request_id)
            for key, value in carried.items():
                md.add(key, value)
            sent = grpc.aio.ClientCallDetails(
                details.method,
                _timeout(details.timeout),
                md,
                details.credentials,
                details.wait_for_ready,
            )
            try:
                call = await continuation(sent, request)
                code = await call.code()
                return call
            finally:
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                metrics.GRPC_CLIENT_HANDLED.labels(*labels, code.name).inc()
                metrics.GRPC_CLIENT_HANDLING.labels(*labels).observe(time.perf_counter() - started)


def dial(
    target: str,
    service_tls: ServiceTls | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to a platform service at `host:port` through the kit's interceptors,
    over mTLS with `service_tls`, else plaintext."""
    chosen = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000), *options]
    interceptors: Any = [_Calls()]
    if service_tls is None:
        return grpc.aio.insecure_channel(target, options=chosen, interceptors=interceptors)
    credentials = tls.channel_credentials(service_tls)
    return grpc.aio.secure_channel(target, credentials, options=chosen, interceptors=interceptors)
