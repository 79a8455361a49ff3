"""The interceptor every server runs: request context, access log, error mapping.

For each RPC, of all four handler kinds, it enforces the method's access
level (services.kit.identity), takes the request id (Envoy's `x-request-id`,
or a new one), the caller's tenant and deadline into contextvars (and, while no
spans are exported, the caller's trace context: services.kit.tracing), checks the
request's strings against the platform's rules (services.kit.strings) before
the handler sees them (each message of a request stream as it is received),
turns a PlatformError into a rich gRPC status (via services.kit.status, the
only mapping) with its Retry-After as a header, hides any other exception
behind INTERNAL, writes one access-log line with service, method, tenant,
status and duration, and counts the RPC in the gRPC ecosystem's RED metrics
(`grpc_server_started_total`, `grpc_server_handled_total`,
`grpc_server_handling_seconds`; services.kit.metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import context as otel_context

from services.kit import context, errors, identity, metrics, status, strings, tracing, wire

log = logging.getLogger("shop.rpc")

# The services no user calls (the launcher's, Envoy's and probes' health checks,
# reflection): no wrapping, no access log, no metrics, no span.
QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the stubs


class _Method:
    """What the interceptor needs of one method, worked out on its first call: its
    names, access level, handler kind and metric children (a `labels()` lookup
    takes a lock and hashes the labels, so it is not done per call)."""

    __slots__ = ("_labels", "access", "handled", "handling", "name", "path", "service", "started")

    def __init__(self, path: str, access: int | None, kind: str) -> None:
        self.path, self.access = path, access
        self.service, _, self.name = path.lstrip("/").partition("/")
        self._labels = (self.service, self.name, _GRPC_TYPES[kind])
        self.started = metrics.GRPC_STARTED.labels(*self._labels)
        self.handling = metrics.GRPC_HANDLING.labels(*self._labels)
        self.handled: dict[str, Any] = {}

    def count_handled(self, outcome: str) -> None:
        child = self.handled.get(outcome)
        if child is None:
            child = self.handled[outcome] = metrics.GRPC_HANDLED.labels(*self._labels, outcome)
        child.inc()


@asynccontextmanager
async def _observed(
    method: _Method, ctx: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[None]:
    method.started.inc()
    # The request metadata, read once per call: the context's, the identity's and
    # the servicer's reads (identity.of) all use this one mapping.
    call = context.Call(ctx)
    md = call.metadata
    remaining = ctx.time_remaining()
    tokens = (
        context.request_id.set(md.get("x-request-id") or uuid.uuid4().hex),
        context.tenant_id.set(identity.claimed_tenant(md)),
        context.method.set(method.path),
        context.deadline.set(None if remaining is None else time.monotonic() + remaining),
        context.user_id.set(md.get("x-user-id", "")),
        context.call.set(call),
    )
    # Without an exporter no span is recorded (services.kit.server adds OpenTelemetry's
    # interceptor only while exporting): an unrecorded span context in the caller's
    # trace (a new trace without a `traceparent`) lets log lines carry trace and span
    # ids and outgoing calls and outbox rows pass them on.
    trace_token = (
        None
        if tracing.exporting()
        else otel_context.attach(tracing.unrecorded_span(md.get("traceparent", "")))
    )
    started = time.perf_counter()
    outcome = "OK"
    try:
        if method.access is not None:
            identity.enforce(method.access, identity.of(ctx))
        yield
    except errors.PlatformError as exc:
        rich = status.to_grpc_status(exc)
        outcome = rich.code.name
        await _send_retry_after(ctx, exc)
        await ctx.abort(rich.code, rich.details, rich.trailing_metadata)
    except grpc.aio.AbortError:
        code = ctx.code()
        outcome = code.name if isinstance(code, grpc.StatusCode) else "ABORTED"
        raise
    except asyncio.CancelledError:
        outcome = "CANCELLED"
        raise
    except Exception:
        log.exception("unhandled error")
        rich = status.internal_status()
        outcome = rich.code.name
        await ctx.abort(rich.code, rich.details, rich.trailing_metadata)
    finally:
        elapsed = time.perf_counter() - started
        method.count_handled(outcome)
        method.handling.observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "rpc",
                extra={
                    "rpc_service": method.service,
                    "rpc_method": method.name,
                    "status": outcome,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        context.request_id.reset(tokens[0])
        context.tenant_id.reset(tokens[1])
        context.method.reset(tokens[2])
        context.deadline.reset(tokens[3])
        context.user_id.reset(tokens[4])
        context.call.reset(tokens[5])
        if trace_token is not None:
            otel_context.detach(trace_token)


async def _send_retry_after(
    ctx: grpc.aio.ServicerContext[Any, Any], exc: errors.PlatformError
) -> None:
    """Retry-After as a response header (rate limits, open breakers): Envoy passes
    initial metadata on as headers and drops trailers on REST responses."""
    retry_after = exc.metadata.get(errors.RETRY_AFTER)
    if retry_after is None:
        return
    # UsageError: the handler sent its headers already (and Retry-After with them).
    with contextlib.suppress(grpc.aio.UsageError):
        await ctx.send_initial_metadata(((errors.RETRY_AFTER, retry_after),))


class _Undecodable:
    """A request body protobuf could not parse (too deeply nested, malformed). gRPC
    answers UNKNOWN, naming protobuf's internals, for a deserializer that raises,
    so the failure travels to the handler as this marker and becomes
    invalid_argument there, in the error model."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return _UNDECODABLE

    return deserialize


def _checked(request: Any) -> None:
    """The request as the kit accepts it: decoded, and within the string rules."""
    if request is _UNDECODABLE:
        raise errors.InvalidArgument(
            "the request message cannot be decoded (malformed, or nested too deeply)"
        )
    strings.check(request)


class PlatformInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Access checks, request context, access log and error mapping around every handler."""

    def __init__(self, access: dict[str, int] | None = None) -> None:
        # gRPC path -> shop.api.v1.Access of the methods whose access is enforced.
        self._access = access or {}
        # gRPC path -> (the server's handler, the wrapped one): gRPC asks for the
        # handler on every call, and the wrapping is the same each time.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        rpc_method = handler_call_details.method
        if handler is None or rpc_method.startswith(QUIET_PREFIXES):
            return handler
        known = self._wrapped.get(rpc_method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(rpc_method, handler)
        self._wrapped[rpc_method] = (handler, wrapped)
        return wrapped

    def _wrap(self, rpc_method: str, handler: Handler) -> Handler:
        # Every handler kind gets the same wrapping: access check, context, string
        # rules (per message received), error mapping and access log.
        kind = _kind(handler)
        build, wrap = _KINDS[kind]
        method = _Method(rpc_method, self._access.get(rpc_method), kind)
        return build(
            wrap(method, getattr(handler, kind)),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=wire.sends_encoded(handler.response_serializer),
        )


def _kind(handler: Handler) -> str:
    """The handler's kind, which is also the name of its attribute holding the behaviour."""
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


def _wrap_unary(method: _Method, behavior: Any) -> Any:
    async def unary(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with _observed(method, ctx):
            _checked(request)
            return await behavior(request, ctx)

    return unary


def _wrap_stream(method: _Method, behavior: Any) -> Any:
    async def stream(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with _observed(method, ctx):
            _checked(request)
            async for item in behavior(request, ctx):
                yield item

    return stream


async def _checked_each(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream whose messages are checked as the handler receives them."""
    async for request in requests:
        _checked(request)
        yield request


def _wrap_client_stream(method: _Method, behavior: Any) -> Any:
    async def client_stream(requests: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with _observed(method, ctx):
            return await behavior(_checked_each(requests), ctx)

    return client_stream


def _wrap_bidi(method: _Method, behavior: Any) -> Any:
    async def bidi(requests: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with _observed(method, ctx):
            async for item in behavior(_checked_each(requests), ctx):
                yield item

    return bidi


# The gRPC ecosystem's `grpc_type` label of each handler kind.
_GRPC_TYPES = {
    "unary_unary": "unary",
    "unary_stream": "server_stream",
    "stream_unary": "client_stream",
    "stream_stream": "bidi_stream",
}

# Per handler kind: how to build a handler of that kind, and the wrapper around its behaviour.
_KINDS: dict[str, tuple[Callable[..., Handler], Callable[[_Method, Any], Any]]] = {
    "unary_unary": (grpc.unary_unary_rpc_method_handler, _wrap_unary),
    "unary_stream": (grpc.unary_stream_rpc_method_handler, _wrap_stream),
    "stream_unary": (grpc.stream_unary_rpc_method_handler, _wrap_client_stream),
    "stream_stream": (grpc.stream_stream_rpc_method_handler, _wrap_bidi),
}
