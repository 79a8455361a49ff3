"""Middleware: code that runs around every attempt of every handler, e.g. tracing and metrics.

A middleware is `async def layer(message, next) -> None`: it does its work,
awaits `next(message)` to go on (at most once) and re-raises whatever `next`
raised. Passed to `Worker(..., middleware=[outer, inner])`, layers run in
order, outermost first, around the handler on every attempt, retries
included; the kit's `Tracing` is on by default and is outermost, so every
other layer runs inside the attempt's span and request id; the kit's
`Metrics` (handler latency by result) is on by default right inside it.

A layer sees the attempt's outcome as `next` returning or raising:
`Permanent`, `Defer`, any other exception, or `HandlerTimeout` when the
handler ran past `handler_timeout_s`. It cannot change how the outcome is
settled: the processor classifies what the handler itself raised, whatever a
layer made of it. An exception raised by a layer while the handler succeeded
(or before it ran) counts as the attempt's failure, classified the same way;
a layer that returns without calling `next` acks the message unhandled (a
deduplicating inbox may want exactly that).

The handler timeout bounds the handler alone, not the chain, so that every
layer sees an overrun as an ordinary exception from `next` (a timeout around
the chain would reach the layers only as a cancellation, indistinguishable
from a shutdown). The chain as a whole is bounded too, halfway between the
handler and the visibility timeouts, so a hanging layer still cannot hold a
message past the moment another worker may take it over.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from opentelemetry import propagate, trace

from services.kit import context, metrics
from services.kit.streams.message import Message, describe_error
from services.kit.streams.policy import Defer, Handler, Permanent
from services.kit.streams.queue import Queue

Middleware = Callable[[Message, Handler], Awaitable[None]]
"""Runs around the rest of the chain: `await next(message)` to go on."""

tracer = trace.get_tracer("shop.queue")


class HandlerTimeout(TimeoutError):
    """The handler (or, rarely, its whole middleware chain) ran past its time limit."""


def describe_failure(exc: BaseException) -> str:
    """How a failed attempt is recorded: in `last_error`, dead letters and the span status."""
    if isinstance(exc, HandlerTimeout):
        return describe_error(TimeoutError(str(exc)))
    return describe_error(exc)


def chain(handler: Handler, layers: Sequence[Middleware]) -> Handler:
    """`handler` wrapped in `layers`, the first outermost."""
    for layer in reversed(layers):
        handler = _around(layer, handler)
    return handler


def _around(layer: Middleware, inner: Handler) -> Handler:
    async def call(message: Message) -> None:
        await layer(message, inner)

    return call


class Tracing:
    """The consumer span of each attempt, in the publisher's trace, with the message id
    as the request id and its tenant as the tenant (so log lines and outgoing calls
    carry them).

    The span is `process <queue>` with the OpenTelemetry messaging attributes and the
    attempt number; a failed attempt ends it in error, described as it is recorded
    in `last_error`.
    """

    def __init__(self, queue: Queue) -> None:
        self._name = f"process {queue.name}"
        self._attributes = {
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue.name,
            "messaging.consumer.group.name": queue.keys.group,
        }

    async def __call__(self, message: Message, next_: Handler) -> None:
        parent = propagate.extract({"traceparent": message.traceparent})
        token = context.request_id.set(message.id)
        tenant = context.tenant_id.set(message.tenant)
        try:
            # The status says why an attempt failed; exception events would repeat it.
            with tracer.start_as_current_span(
                self._name,
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    **self._attributes,
                    "messaging.message.id": message.id,
                    "shop.queue.attempt": message.attempt,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    await next_(message)
                except Exception as exc:
                    span.set_status(trace.StatusCode.ERROR, describe_failure(exc))
                    raise
        finally:
            context.request_id.reset(token)
            context.tenant_id.reset(tenant)


def attempt_result(exc: BaseException | None) -> str:
    """An attempt's result as `shop_queue_handler_duration_seconds` labels it."""
    if exc is None:
        return "ok"
    if isinstance(exc, HandlerTimeout):
        return "timeout"
    if isinstance(exc, Defer):
        return "deferred"
    if isinstance(exc, Permanent):
        return "permanent"
    return "error"


class Metrics:
    """Each attempt's duration, by its result (ok, error, timeout, deferred, permanent)."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue.name

    async def __call__(self, message: Message, next_: Handler) -> None:
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            await next_(message)
        except Exception as exc:
            failure = exc
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.QUEUE_HANDLER.labels(self._queue, attempt_result(failure)).observe(elapsed)
