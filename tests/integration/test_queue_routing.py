"""Routing by message type and middleware around every attempt, on the platform's real Redis.

Every test has a queue of its own; the worker helpers are the queue kit tests'.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from services.kit import context
from services.kit.streams import Defer, Handler, Message, Permanent, Queue, RetryPolicy, Worker
from services.launcher.platform import State
from tests.integration.test_queue_kit import (
    _recording_provider,
    eventually,
    message,
    stats_reach,
    worker_config,
)


@pytest.fixture
async def redis(platform: State) -> AsyncIterator[Redis]:
    client = Redis.from_url(platform.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(redis: Redis) -> AsyncIterator[Queue]:
    made = Queue(redis, f"test-{uuid.uuid4().hex[:12]}")
    yield made
    keys = made.keys
    await redis.delete(keys.stream, keys.delayed, keys.dead, keys.stats)


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
