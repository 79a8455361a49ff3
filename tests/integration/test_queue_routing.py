"""Routing by message type and middleware around every attempt, on the session's real Redis.

Every test has a queue of its own; the worker helpers are the queue kit tests'.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.kit import context
from services.kit.streams import (
    DeadLetters,
    Defer,
    Handler,
    Message,
    Middleware,
    Permanent,
    Queue,
    RetryPolicy,
    Router,
    Tracing,
    Worker,
)
from tests.integration.test_queue_kit import (
    FAST_RETRY,
    _recording_provider,
    eventually,
    message,
    settled,
    stats_reach,
    worker_config,
)


@asynccontextmanager
async def running(
    queue: Queue, handler: Handler, worker: dict[str, Any] | None = None, **config: Any
) -> AsyncIterator[Worker]:
    """A worker (with `worker` keyword arguments) running for the block, then drained."""
    made = Worker(queue, handler, worker_config(**config), **(worker or {}))
    stop = asyncio.Event()
    task = asyncio.create_task(made.run(stop))
    try:
        yield made
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def typed(id: str, message_type: str) -> Message:
    return Message(id=id, tenant="acme", type=message_type, payload=id.encode())


# --- routing by type ---------------------------------------------------------------------


async def test_each_message_reaches_the_handler_of_its_type(queue: Queue) -> None:
    seen: list[tuple[str, str]] = []
    router = Router()

    @router.route("orders.closed")
    async def closed(received: Message) -> None:
        seen.append(("closed", received.id))

    async def shipped(received: Message) -> None:
        seen.append(("shipped", received.id))

    router.route_matching(r"shipment\.[a-z_]+", shipped)

    for id, message_type in [("o1", "orders.closed"), ("s1", "shipment.delivered"),
                             ("o2", "orders.closed"), ("s2", "shipment.status_changed")]:  # fmt: skip
        await queue.publish(typed(id, message_type))
    async with running(queue, router) as worker:
        await eventually(stats_reach(queue, processed=4))
        assert worker.router is router

    assert sorted(seen) == [
        ("closed", "o1"),
        ("closed", "o2"),
        ("shipped", "s1"),
        ("shipped", "s2"),
    ]
    assert (router.types, router.patterns) == (("orders.closed",), (r"shipment\.[a-z_]+",))
    assert settled(await queue.stats())


async def test_a_type_nobody_routes_is_dead_lettered_at_once_naming_the_type(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Message] = []
    router = Router()

    @router.route("orders.closed")
    async def closed(received: Message) -> None:
        calls.append(received)

    await queue.publish(typed("x1", "orders.reopened"))
    with caplog.at_level(logging.ERROR, logger="shop.queue"):
        async with running(queue, router, retry=RetryPolicy(max_attempts=5)):
            await eventually(stats_reach(queue, dead=1))

    assert calls == []
    [letter], _ = await DeadLetters(queue).list("acme")
    reason = (
        "UnknownMessageType: no handler for message type 'orders.reopened' on this worker "
        "(it takes 'orders.closed')"
    )
    assert (letter.message.type, letter.error, letter.attempts) == ("orders.reopened", reason, 1)
    stats = await queue.stats()
    assert (stats.retried, stats.deferred, stats.dead_lettered) == (0, 0, 1)
    [record] = [r for r in caplog.records if r.getMessage() == "message dead-lettered"]
    assert (record.__dict__["message_id"], record.__dict__["error"]) == ("x1", reason)
    assert record.__dict__["reason"] == "permanent"


# --- middleware --------------------------------------------------------------------------


def recording(name: str, log: list[tuple[str, ...]]) -> Middleware:
    """A layer that notes when it starts, the request id it sees, and how `next` ended."""

    async def layer(received: Message, next_: Handler) -> None:
        log.append((name, "in", str(received.attempt), context.request_id.get()))
        try:
            await next_(received)
        except Exception as exc:
            log.append((name, "out", type(exc).__name__))
            raise
        log.append((name, "out", "returned"))

    return layer


async def test_middleware_runs_in_order_around_every_attempt_retries_included(
    queue: Queue,
) -> None:
    log: list[tuple[str, ...]] = []

    async def handle(received: Message) -> None:
        log.append(("handler", str(received.attempt)))
        if received.attempt < 2:
            raise ConnectionError("downstream is down")

    await queue.publish(message("m-order"))
    layers = [recording("outer", log), recording("inner", log)]
    async with running(queue, handle, {"middleware": layers}, retry=FAST_RETRY):
        await eventually(stats_reach(queue, processed=1))

    def attempt(n: int, outcome: str) -> list[tuple[str, ...]]:
        return [
            ("outer", "in", str(n), "m-order"),  # inside the kit's tracing: the request id is set
            ("inner", "in", str(n), "m-order"),
            ("handler", str(n)),
            ("inner", "out", outcome),
            ("outer", "out", outcome),
        ]

    assert log == [
        *attempt(0, "ConnectionError"),
        *attempt(1, "ConnectionError"),
        *attempt(2, "returned"),
    ]


async def test_middleware_sees_every_outcome_the_timeout_included(queue: Queue) -> None:
    outcomes: dict[str, list[str]] = {}

    async def watch(received: Message, next_: Handler) -> None:
        seen = outcomes.setdefault(received.id, [])
        try:
            await next_(received)
        except Exception as exc:
            seen.append(type(exc).__name__)
            raise
        seen.append("returned")

    async def handle(received: Message) -> None:
        if received.attempt > 0 or received.last_error:
            return
        if received.id == "permanent":
            raise Permanent("never")
        if received.id == "deferred":
            raise Defer(0.0, "not now")
        if received.id == "failed":
            raise KeyError("shipment")
        if received.id == "slow":
            await asyncio.sleep(5)

    for id in ("permanent", "deferred", "failed", "slow", "fine"):
        await queue.publish(message(id))
    config = {"handler_timeout_s": 0.2, "retry": FAST_RETRY}
    async with running(queue, handle, {"middleware": [watch]}, **config):
        await eventually(stats_reach(queue, processed=4, dead=1))

    assert outcomes == {
        "permanent": ["Permanent"],
        "deferred": ["Defer", "returned"],
        "failed": ["KeyError", "returned"],
        "slow": ["HandlerTimeout", "returned"],
        "fine": ["returned"],
    }


async def test_a_middleware_cannot_change_how_an_attempt_is_settled(queue: Queue) -> None:
    """Swallowing a failure does not ack it; disguising a Permanent does not retry it."""
    calls: list[Message] = []

    async def swallow(received: Message, next_: Handler) -> None:
        try:
            await next_(received)
        except Permanent as exc:
            raise RuntimeError("retry me instead") from exc
        except Exception:
            return

    async def handle(received: Message) -> None:
        calls.append(received)
        if received.id == "doomed":
            raise Permanent("bad payload")
        raise ConnectionError("downstream is down")

    await queue.publish(message("doomed"))
    await queue.publish(message("flaky"))
    async with running(queue, handle, {"middleware": [swallow]}, retry=FAST_RETRY):
        await eventually(stats_reach(queue, dead=2))

    assert [m.attempt for m in calls if m.id == "doomed"] == [0]
    assert [m.attempt for m in calls if m.id == "flaky"] == [0, 1, 2]
    letters, _ = await DeadLetters(queue).list("acme")
    assert {(d.message.id, d.error, d.attempts) for d in letters} == {
        ("doomed", "Permanent: bad payload", 1),
        ("flaky", "ConnectionError: downstream is down", 3),
    }
    stats = await queue.stats()
    assert (stats.processed, stats.retried, stats.dead_lettered) == (0, 2, 2)


async def test_an_exception_raised_by_a_middleware_is_a_failed_attempt(queue: Queue) -> None:
    calls: list[Message] = []

    async def flaky_before(received: Message, next_: Handler) -> None:
        if received.id == "before" and received.attempt == 0:
            raise ConnectionError("metrics backend is down")
        if received.id == "refused":
            raise Permanent("tenant is suspended")
        await next_(received)

    async def flaky_after(received: Message, next_: Handler) -> None:
        await next_(received)
        if received.id == "after" and received.attempt == 0:
            raise ValueError("could not record")

    async def handle(received: Message) -> None:
        calls.append(received)

    for id in ("before", "after", "refused"):
        await queue.publish(message(id))
    layers = [flaky_before, flaky_after]
    async with running(queue, handle, {"middleware": layers}, retry=FAST_RETRY):
        await eventually(stats_reach(queue, processed=2, dead=1))

    # Retried like a handler failure (the handler runs again: at-least-once).
    assert sorted((m.id, m.attempt, m.last_error) for m in calls) == [
        ("after", 0, ""),
        ("after", 1, "ValueError: could not record"),
        ("before", 1, "ConnectionError: metrics backend is down"),
    ]
    [letter], _ = await DeadLetters(queue).list("acme")
    assert (letter.message.id, letter.error, letter.attempts) == (
        "refused",
        "Permanent: tenant is suspended",
        1,
    )


async def test_a_hanging_middleware_is_bounded_before_the_visibility_timeout(
    queue: Queue,
) -> None:
    calls: list[Message] = []

    async def hang_once(received: Message, next_: Handler) -> None:
        await next_(received)
        if len(calls) == 1:
            await asyncio.sleep(30)

    async def handle(received: Message) -> None:
        calls.append(received)

    await queue.publish(message("hung"))
    config = {"handler_timeout_s": 0.2, "visibility_timeout_s": 1.0, "retry": FAST_RETRY}
    async with running(queue, handle, {"middleware": [hang_once]}, **config):
        await eventually(stats_reach(queue, processed=1))

    # Halfway between the handler's 0.2 s and the visibility timeout's 1 s: settled by
    # this worker, never taken over by another.
    assert [(m.attempt, m.last_error) for m in calls] == [
        (0, ""),
        (1, "TimeoutError: the handler and its middleware ran longer than 0.6s"),
    ]
    stats = await queue.stats()
    assert (stats.retried, stats.reclaimed) == (1, 0)


async def test_tracing_can_be_left_out_or_placed_in_the_chain(
    queue: Queue, spans: InMemorySpanExporter
) -> None:
    seen: list[tuple[str, str]] = []

    def noting(where: str) -> Middleware:
        async def layer(received: Message, next_: Handler) -> None:
            seen.append((where, context.request_id.get()))
            await next_(received)

        return layer

    async def handle(received: Message) -> None:
        seen.append(("handler", context.request_id.get()))

    await queue.publish(message("untraced"))
    async with running(queue, handle, {"tracing": False, "middleware": [noting("outer")]}):
        await eventually(stats_reach(queue, processed=1))
    assert seen == [("outer", ""), ("handler", "")]
    assert consumer_spans(spans, queue) == []

    seen.clear()
    await queue.publish(message("traced-inside"))
    layers = [noting("outer"), Tracing(queue)]
    async with running(queue, handle, {"tracing": False, "middleware": layers}):
        await eventually(stats_reach(queue, processed=2))
    assert seen == [("outer", ""), ("handler", "traced-inside")]
    [span] = consumer_spans(spans, queue)
    assert span.attributes is not None
    assert span.attributes["messaging.message.id"] == "traced-inside"


# --- tracing ---------------------------------------------------------------------------------


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    _recording_provider().add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def consumer_spans(exporter: InMemorySpanExporter, queue: Queue) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == f"process {queue.name}"]


async def test_every_attempt_has_its_consumer_span_in_the_publishers_trace(
    queue: Queue, spans: InMemorySpanExporter
) -> None:
    seen: list[tuple[int, str]] = []

    async def handle(received: Message) -> None:
        seen.append((received.attempt, context.request_id.get()))
        if len(seen) == 1:
            raise ValueError("boom")
        if len(seen) == 2:
            raise Defer(0.0, "routing is down")
        if len(seen) == 3:
            await asyncio.sleep(5)

    with _recording_provider().get_tracer("test").start_as_current_span("publish") as publish:
        await queue.publish(message("traced-2"))
    published = publish.get_span_context()
    retry = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.02)
    async with running(queue, handle, handler_timeout_s=0.3, retry=retry):
        await eventually(stats_reach(queue, processed=1))

    assert seen == [(0, "traced-2"), (1, "traced-2"), (1, "traced-2"), (2, "traced-2")]
    made = consumer_spans(spans, queue)
    assert [span.attributes for span in made] == [
        {
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue.name,
            "messaging.consumer.group.name": queue.keys.group,
            "messaging.message.id": "traced-2",
            "shop.queue.attempt": attempt,
        }
        for attempt in (0, 1, 1, 2)
    ]
    assert [(span.status.status_code, span.status.description) for span in made] == [
        (trace.StatusCode.ERROR, "ValueError: boom"),
        (trace.StatusCode.ERROR, "Defer: routing is down"),
        (trace.StatusCode.ERROR, "TimeoutError: the handler ran longer than 0.3s"),
        (trace.StatusCode.UNSET, None),
    ]
    for span in made:
        assert span.kind == trace.SpanKind.CONSUMER
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "shop.queue"
        assert span.parent is not None
        assert (span.parent.trace_id, span.parent.span_id) == (
            published.trace_id,
            published.span_id,
        )
        assert span.events == ()  # the status says why; no exception events
    assert context.request_id.get() == ""


async def test_a_permanent_failure_ends_its_span_in_error(
    queue: Queue, spans: InMemorySpanExporter
) -> None:
    async def handle(received: Message) -> None:
        raise Permanent("not a courier event")

    with _recording_provider().get_tracer("test").start_as_current_span("publish"):
        await queue.publish(message("traced-3"))
    async with running(queue, handle):
        await eventually(stats_reach(queue, dead_lettered=1))

    [span] = consumer_spans(spans, queue)
    assert (span.status.status_code, span.status.description) == (
        trace.StatusCode.ERROR,
        "Permanent: not a courier event",
    )
