"""The queue kit on a real Redis: delivery, bounds, retries, dead letters,
reclaiming, shutdown and trace context. Every test has a queue of its own."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.kit import context
from services.kit.streams import (
    DeadLetters,
    Defer,
    Handler,
    Message,
    Permanent,
    Queue,
    QueueStats,
    RetryPolicy,
    Worker,
    WorkerConfig,
)
from services.launcher import ROOT
from tests.draws import Fixed

FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.02)
BINARY = bytes(range(256))


def worker_config(**overrides: Any) -> WorkerConfig:
    settings: dict[str, Any] = {
        "consumer": f"test-{uuid.uuid4().hex[:8]}",
        "concurrency": 4,
        "visibility_timeout_s": 5.0,
        "handler_timeout_s": 2.0,
        "block_ms": 50,
        "scheduler_interval_s": 0.02,
        "retry": FAST_RETRY,
        **overrides,
    }
    return WorkerConfig(**settings)


@asynccontextmanager
async def running(
    queue: Queue, handler: Handler, *, rng: random.Random | None = None, **overrides: Any
) -> AsyncIterator[Worker]:
    """A worker running for the block; stopped gracefully (and drained) on leaving it."""
    worker = Worker(queue, handler, worker_config(**overrides), rng=rng)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if await outcome if isinstance(outcome, Awaitable) else outcome:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def stats_reach(queue: Queue, **wanted: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        stats = await queue.stats()
        return all(getattr(stats, name) == value for name, value in wanted.items())

    return check


def settled(stats: QueueStats) -> bool:
    """Nothing left in the stream, nothing read and not acked."""
    return stats.length == 0 and stats.pending == 0


async def stored(redis: Redis, key: str) -> list[tuple[str, dict[bytes, bytes]]]:
    """A stream's entries as Redis holds them."""
    entries: Any = await redis.xrange(key)
    return [(entry_id.decode(), fields) for entry_id, fields in entries]


def message(id: str, tenant: str = "acme", payload: bytes = b"{}") -> Message:
    return Message(id=id, tenant=tenant, type="thing.happened", payload=payload)


# --- delivery --------------------------------------------------------------------------


async def test_published_messages_are_handled_then_acked_and_deleted(queue: Queue) -> None:
    seen: list[Message] = []

    async def handle(received: Message) -> None:
        seen.append(received)

    entry_ids = [
        await queue.publish(message(f"m{i}", payload=f"body {i}".encode())) for i in range(3)
    ]
    before = await queue.stats()
    assert (before.length, before.pending) == (3, 0)  # no worker (nor group) yet

    async with running(queue, handle):
        await eventually(lambda: len(seen) == 3)

    assert sorted(m.id for m in seen) == ["m0", "m1", "m2"]
    assert {m.entry_id for m in seen} == set(entry_ids)
    first = next(m for m in seen if m.id == "m0")
    assert (first.tenant, first.type, first.payload, first.attempt) == (
        "acme",
        "thing.happened",
        b"body 0",
        0,
    )
    assert abs(first.enqueued_at_ms - time.time() * 1000) < 10_000
    after = await queue.stats()
    assert settled(after)
    assert after.processed == 3


async def test_publish_once_appends_a_duplicate_only_once(queue: Queue, redis: Redis) -> None:
    key = f"test-dedupe:{queue.name}:evt-1"
    try:
        first_id, first_duplicate = await queue.publish_once(message("evt-1", payload=b"1st"), key)
        again = await queue.publish_once(message("evt-1", payload=b"2nd"), key)
        assert first_duplicate is False
        assert again == (first_id, True)
        entries = await stored(redis, queue.keys.stream)
        assert [(entry_id, fields[b"payload"]) for entry_id, fields in entries] == [
            (first_id, b"1st")
        ]
        assert 0 < await redis.ttl(key) <= 7 * 86400
    finally:
        await redis.delete(key)


async def test_publish_once_raises_when_redis_refuses_and_remembers_nothing(
    queue: Queue, redis: Redis
) -> None:
    key = f"test-dedupe:{queue.name}:evt-2"
    await redis.set(queue.keys.stream, "not a stream")  # XADD now fails
    with pytest.raises(RedisError):
        await queue.publish_once(message("evt-2"), key)
    assert await redis.exists(key) == 0  # so the sender's retry is not taken for a duplicate
    await redis.delete(queue.keys.stream)
    _, duplicate = await queue.publish_once(message("evt-2"), key)
    assert duplicate is False
    await redis.delete(key)


async def test_never_more_handlers_than_the_concurrency_at_once(queue: Queue) -> None:
    now_running, peak, spans = 0, 0, []

    async def handle(received: Message) -> None:
        nonlocal now_running, peak
        now_running += 1
        peak = max(peak, now_running)
        started = time.monotonic()
        await asyncio.sleep(0.2)
        now_running -= 1
        spans.append((started, time.monotonic()))

    for i in range(20):
        await queue.publish(message(f"slow-{i}"))
    async with running(queue, handle, concurrency=4) as worker:
        while len(spans) < 20:
            assert worker.in_flight <= 4
            await asyncio.sleep(0.01)

    assert peak == 4
    # 20 messages, 4 at a time, 0.2 s each: five rounds.
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    assert 0.95 <= elapsed < 1.5
    assert settled(await queue.stats())


# --- failures --------------------------------------------------------------------------


async def test_a_failed_attempt_is_retried_with_its_attempt_and_error(queue: Queue) -> None:
    attempts: list[Message] = []

    async def handle(received: Message) -> None:
        attempts.append(received)
        if received.attempt < 2:
            raise RuntimeError(f"flaky #{received.attempt}")

    await queue.publish(message("order-7", payload=BINARY))
    retry = RetryPolicy(max_attempts=5, base_s=0.05, cap_s=0.1)
    async with running(queue, handle, retry=retry):
        await eventually(stats_reach(queue, processed=1))

    assert [(m.attempt, m.last_error) for m in attempts] == [
        (0, ""),
        (1, "RuntimeError: flaky #0"),
        (2, "RuntimeError: flaky #1"),
    ]
    assert {(m.id, m.payload, m.enqueued_at_ms) for m in attempts} == {
        ("order-7", BINARY, attempts[0].enqueued_at_ms)
    }
    stats = await queue.stats()
    assert (stats.retried, stats.processed, stats.dead_lettered, stats.delayed) == (2, 1, 0, 0)
    assert settled(stats)


async def test_a_deferred_message_waits_without_spending_an_attempt(queue: Queue) -> None:
    """An outage of a dependency (its breaker open) delays messages, never dead-letters them."""
    seen: list[tuple[int, str, float]] = []

    async def handle(received: Message) -> None:
        seen.append((received.attempt, received.last_error, time.monotonic()))
        if len(seen) <= 3:
            raise Defer(0.1, "routing is unavailable (circuit open)")

    await queue.publish(message("order-8"))
    # One attempt only: a single failure would dead-letter it, three deferrals do not.
    retry = RetryPolicy(max_attempts=1, base_s=0.05, cap_s=0.1)
    async with running(queue, handle, retry=retry):
        await eventually(stats_reach(queue, processed=1))

    assert [(attempt, error) for attempt, error, _ in seen] == [
        (0, ""),
        *[(0, "Defer: routing is unavailable (circuit open)")] * 3,
    ]
    gaps = [later - earlier for (_, _, earlier), (_, _, later) in itertools.pairwise(seen)]
    assert all(gap >= 0.1 for gap in gaps), gaps
    stats = await queue.stats()
    assert (stats.deferred, stats.retried, stats.processed, stats.dead_lettered) == (3, 0, 1, 0)


async def test_a_waiting_retry_holds_no_handler_slot(queue: Queue) -> None:
    handled: list[tuple[float, str, int]] = []

    async def handle(received: Message) -> None:
        handled.append((time.monotonic(), received.id, received.attempt))
        if received.attempt == 0 and received.id == "retried":
            raise RuntimeError("try again later")

    await queue.publish(message("retried"))
    one_second = RetryPolicy(max_attempts=3, base_s=1.0, cap_s=1.0)
    async with running(queue, handle, concurrency=1, retry=one_second, rng=Fixed(1.0)):
        await eventually(stats_reach(queue, retried=1))
        failed_at = time.monotonic()
        await queue.publish(message("other"))
        await eventually(stats_reach(queue, processed=2), within=3)

    when = {(name, attempt): at for at, name, attempt in handled}
    # The only slot was free while "retried" waited out its one-second backoff.
    assert when[("other", 0)] - failed_at < 0.5
    assert when[("other", 0)] < when[("retried", 1)]
    assert when[("retried", 1)] - when[("retried", 0)] >= 0.95


async def test_an_exhausted_message_is_dead_lettered_then_replayed(queue: Queue) -> None:
    healthy = False
    calls: list[Message] = []

    async def handle(received: Message) -> None:
        calls.append(received)
        if not healthy:
            raise ConnectionError("downstream is down")

    await queue.publish(message("evt-9", payload=BINARY))
    dead = DeadLetters(queue)
    async with running(queue, handle):
        await eventually(stats_reach(queue, dead=1))
        assert [m.attempt for m in calls] == [0, 1, 2]  # max_attempts=3

        letters, cursor = await dead.list("acme")
        assert cursor is None
        [letter] = letters
        assert (letter.message.id, letter.message.tenant, letter.message.payload) == (
            "evt-9",
            "acme",
            BINARY,
        )
        assert (letter.attempts, letter.error) == (3, "ConnectionError: downstream is down")
        assert letter.message.enqueued_at_ms == calls[0].enqueued_at_ms
        assert await dead.get("acme", letter.dead_id) == letter

        healthy = True
        new_entry = await dead.replay("acme", letter.dead_id)
        await eventually(stats_reach(queue, processed=1))

    replayed = calls[-1]
    assert len(calls) == 4
    assert (replayed.id, replayed.attempt, replayed.last_error) == ("evt-9", 0, "")
    assert (replayed.entry_id, replayed.payload) == (new_entry, BINARY)
    assert replayed.enqueued_at_ms == calls[0].enqueued_at_ms
    assert await dead.get("acme", letter.dead_id) is None
    assert await dead.replay("acme", letter.dead_id) is None  # gone: replayed once only
    stats = await queue.stats()
    assert (stats.dead, stats.dead_lettered, stats.retried) == (0, 1, 2)
    assert settled(stats)


async def test_permanent_goes_to_the_dead_stream_without_a_retry(queue: Queue) -> None:
    calls = 0

    async def handle(received: Message) -> None:
        nonlocal calls
        calls += 1
        raise Permanent("not a courier event")

    await queue.publish(message("evt-p"))
    async with running(queue, handle, retry=RetryPolicy(max_attempts=5)):
        await eventually(stats_reach(queue, dead=1))

    assert calls == 1
    [letter], _ = await DeadLetters(queue).list("acme")
    assert (letter.error, letter.attempts) == ("Permanent: not a courier event", 1)
    stats = await queue.stats()
    assert (stats.retried, stats.dead_lettered) == (0, 1)
    assert settled(stats)


async def test_a_malformed_entry_is_dead_lettered_and_the_worker_carries_on(
    queue: Queue, redis: Redis
) -> None:
    handled: list[str] = []

    async def handle(received: Message) -> None:
        handled.append(received.id)

    await redis.xadd(queue.keys.stream, {"garbage": "1"})
    await queue.publish(message("fine"))
    async with running(queue, handle):
        await eventually(stats_reach(queue, processed=1, dead=1))

    assert handled == ["fine"]
    [(_, fields)] = await stored(redis, queue.keys.dead)
    assert fields[b"garbage"] == b"1"
    assert fields[b"error"].startswith(b"malformed: missing field(s): id, tenant")
    assert settled(await queue.stats())


# --- dead letters, per tenant ----------------------------------------------------------


async def _dead_letters_of(queue: Queue, *messages: Message) -> DeadLetters:
    async def reject(received: Message) -> None:
        raise Permanent("rejected")

    for each in messages:
        await queue.publish(each)
    # One slot: dead-lettered in publishing order.
    async with running(queue, reject, concurrency=1):
        await eventually(stats_reach(queue, dead=len(messages)))
    return DeadLetters(queue)


async def test_dead_letters_are_listed_in_pages_and_deleted_per_tenant(queue: Queue) -> None:
    dead = await _dead_letters_of(
        queue, message("a1"), message("o1", tenant="other"), message("a2"), message("a3")
    )

    page, cursor = await dead.list("acme", limit=2)
    assert [d.message.id for d in page] == ["a1", "a2"]
    assert cursor == page[-1].dead_id
    rest, end = await dead.list("acme", after=cursor, limit=2)
    assert ([d.message.id for d in rest], end) == (["a3"], None)
    everything, end = await dead.list("acme", limit=3)
    assert (len(everything), end) == (3, None)

    a1 = page[0]
    # Another tenant sees nothing of acme's, and can do nothing to it.
    assert [d.message.id for d in (await dead.list("other"))[0]] == ["o1"]
    assert await dead.get("other", a1.dead_id) is None
    assert await dead.replay("other", a1.dead_id) is None
    assert await dead.delete("other", a1.dead_id) is False
    assert await dead.purge("nobody") == 0
    assert len((await dead.list("acme"))[0]) == 3

    assert await dead.delete("acme", a1.dead_id) is True
    assert await dead.delete("acme", a1.dead_id) is False
    assert await dead.purge("acme") == 2
    assert await dead.list("acme") == ([], None)
    assert [d.message.id for d in (await dead.list("other"))[0]] == ["o1"]


async def test_replay_all_replays_every_dead_letter_of_the_tenant_only(queue: Queue) -> None:
    dead = await _dead_letters_of(
        queue, message("a1"), message("o1", tenant="other"), message("a2")
    )
    handled: list[Message] = []

    async def handle(received: Message) -> None:
        handled.append(received)

    assert await dead.replay_all("acme") == 2
    async with running(queue, handle):
        await eventually(lambda: len(handled) == 2)
    assert sorted((m.id, m.tenant, m.attempt) for m in handled) == [
        ("a1", "acme", 0),
        ("a2", "acme", 0),
    ]
    assert await dead.list("acme") == ([], None)
    assert [d.message.id for d in (await dead.list("other"))[0]] == ["o1"]
    assert await dead.replay_all("acme") == 0


# --- consumers that stop -----------------------------------------------------------------


async def _taken_by_ghosts(queue: Queue, redis: Redis, ghosts: int) -> tuple[str, float]:
    """Publish a message and have `ghosts` consumers take it in turn and die; its entry id."""
    keys = queue.keys
    await redis.xgroup_create(keys.stream, keys.group, id="0", mkstream=True)
    entry_id = await queue.publish(message("orphan"))
    await redis.xreadgroup(keys.group, "ghost-1", {keys.stream: ">"}, count=1)
    for n in range(2, ghosts + 1):
        await redis.xclaim(keys.stream, keys.group, f"ghost-{n}", 0, [entry_id])
    return entry_id, time.monotonic()


async def test_a_dead_consumers_message_is_handled_once_after_the_visibility_timeout(
    queue: Queue, redis: Redis
) -> None:
    handled: list[tuple[float, Message]] = []

    async def handle(received: Message) -> None:
        handled.append((time.monotonic(), received))

    # Delivered twice, reclaiming makes three: not more than max_attempts (3), so it runs.
    entry_id, taken_at = await _taken_by_ghosts(queue, redis, ghosts=2)
    async with running(queue, handle, visibility_timeout_s=0.5, handler_timeout_s=0.4):
        await eventually(stats_reach(queue, processed=1), within=3)
        await asyncio.sleep(0.7)  # another visibility timeout: nothing more to take over

    [(at, received)] = handled
    assert (received.id, received.entry_id) == ("orphan", entry_id)
    assert at - taken_at >= 0.5
    stats = await queue.stats()
    assert stats.reclaimed == 1
    assert settled(stats)


# A worker process of its own, whose handler announces the message and hangs.
DOOMED_WORKER = """
import asyncio, sys
from redis.asyncio import Redis
from services.kit.streams import Queue, Worker, WorkerConfig

async def main(url, name):
    async def hang(message):
        print(message.id, flush=True)
        await asyncio.sleep(60)

    config = WorkerConfig("doomed", block_ms=50)
    await Worker(Queue(Redis.from_url(url), name), hang, config).run(asyncio.Event())

asyncio.run(main(*sys.argv[1:]))
"""


async def test_the_message_of_a_killed_worker_process_is_handled_by_another(
    queue: Queue, redis_url: str
) -> None:
    await queue.publish(message("evt-k"))
    doomed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DOOMED_WORKER,
        redis_url,
        queue.name,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"},
    )
    try:
        assert doomed.stdout is not None
        announced = await asyncio.wait_for(doomed.stdout.readline(), 15)
        assert announced.strip() == b"evt-k"  # its handler is running
    finally:
        doomed.kill()  # SIGKILL: no chance to settle anything
        await doomed.wait()
    handled: list[Message] = []

    async def handle(received: Message) -> None:
        handled.append(received)

    async with running(queue, handle, visibility_timeout_s=0.5, handler_timeout_s=0.4):
        await eventually(stats_reach(queue, processed=1), within=3)

    assert [(m.id, m.attempt) for m in handled] == [("evt-k", 0)]
    stats = await queue.stats()
    assert stats.reclaimed == 1
    assert settled(stats)


async def test_a_message_that_kills_every_consumer_is_dead_lettered_on_reclaim(
    queue: Queue, redis: Redis
) -> None:
    calls = 0

    async def handle(received: Message) -> None:
        nonlocal calls
        calls += 1

    await _taken_by_ghosts(queue, redis, ghosts=3)  # delivered 3 times; reclaiming makes 4
    retry = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.02)
    async with running(queue, handle, visibility_timeout_s=0.5, handler_timeout_s=0.4, retry=retry):
        await eventually(stats_reach(queue, dead=1), within=3)

    assert calls == 0
    [letter], _ = await DeadLetters(queue).list("acme")
    assert letter.message.id == "orphan"
    assert letter.error == "reclaimed after 4 deliveries: its consumers stopped"
    stats = await queue.stats()
    assert (stats.reclaimed, stats.dead_lettered) == (0, 1)
    assert settled(stats)


async def test_a_pending_entry_deleted_from_the_stream_is_just_acked(
    queue: Queue, redis: Redis
) -> None:
    calls = 0

    async def handle(received: Message) -> None:
        nonlocal calls
        calls += 1

    entry_id, _ = await _taken_by_ghosts(queue, redis, ghosts=1)
    await redis.xdel(queue.keys.stream, entry_id)  # e.g. trimmed while its consumer was dead
    async with running(queue, handle, visibility_timeout_s=0.5, handler_timeout_s=0.4):
        await eventually(stats_reach(queue, pending=0), within=3)

    assert calls == 0
    stats = await queue.stats()
    assert (stats.processed, stats.dead, stats.reclaimed) == (0, 0, 0)


# --- stopping ------------------------------------------------------------------------------


async def test_stopping_reads_nothing_new_and_waits_for_handlers_in_flight(queue: Queue) -> None:
    started: list[str] = []
    finished: list[str] = []
    all_started = asyncio.Event()

    async def handle(received: Message) -> None:
        started.append(received.id)
        if len(started) == 3:
            all_started.set()
        await asyncio.sleep(0.5)
        finished.append(received.id)

    for i in range(4):
        await queue.publish(message(f"m{i}"))
    worker = Worker(queue, handle, worker_config(concurrency=3))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(all_started.wait(), 5)
    assert (await queue.stats()).pending == 3  # not acked while their handlers run
    stopped_at = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 5)

    assert time.monotonic() - stopped_at >= 0.3  # it waited for the sleeping handlers
    assert sorted(finished) == ["m0", "m1", "m2"]
    assert worker.in_flight == 0
    stats = await queue.stats()
    # All three acked; the fourth was never read.
    assert (stats.processed, stats.pending, stats.length) == (3, 0, 1)


async def test_a_handler_past_its_timeout_at_shutdown_is_cancelled_and_retried(
    queue: Queue,
) -> None:
    async def hang(received: Message) -> None:
        await asyncio.sleep(30)

    await queue.publish(message("stuck"))
    later = RetryPolicy(max_attempts=3, base_s=0.1, cap_s=0.1)
    worker = Worker(queue, hang, worker_config(handler_timeout_s=0.3, retry=later))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await eventually(lambda: worker.in_flight == 1)
    stop.set()
    await asyncio.wait_for(task, 2)

    stats = await queue.stats()
    assert (stats.retried, stats.delayed, stats.pending, stats.processed) == (1, 1, 0, 0)
    retried: list[Message] = []

    async def handle(received: Message) -> None:
        retried.append(received)

    async with running(queue, handle, retry=later):
        await eventually(lambda: len(retried) == 1)
    assert retried[0].attempt == 1
    assert retried[0].last_error == "TimeoutError: the handler ran longer than 0.3s"


# --- trace context ---------------------------------------------------------------------------


class Collector(SpanProcessor):
    """Keeps the ended spans whose name starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        if span.name.startswith(self.prefix):
            self.spans.append(span)


def _recording_provider() -> TracerProvider:
    # The test process has no tracer provider unless a test installed one; the
    # SDK's default sampler records the spans of a sampled parent.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    return provider


async def test_the_handler_runs_in_the_publishers_trace_with_the_message_id(queue: Queue) -> None:
    provider = _recording_provider()
    collector = Collector(f"process {queue.name}")
    provider.add_span_processor(collector)
    seen: list[tuple[int, str]] = []

    async def handle(received: Message) -> None:
        span_context = trace.get_current_span().get_span_context()
        seen.append((span_context.trace_id, context.request_id.get()))

    with provider.get_tracer("test").start_as_current_span("publish") as publish_span:
        await queue.publish(message("traced-1"))
    published = publish_span.get_span_context()
    async with running(queue, handle):
        await eventually(lambda: len(seen) == 1)

    assert seen == [(published.trace_id, "traced-1")]
    [span] = collector.spans
    assert span.kind == trace.SpanKind.CONSUMER
    assert span.parent is not None
    assert span.parent.span_id == published.span_id
    expected = {
        "messaging.system": "redis",
        "messaging.destination.name": queue.name,
        "messaging.message.id": "traced-1",
        "shop.queue.attempt": 0,
    }
    attributes = dict(span.attributes or {})
    assert {name: attributes.get(name) for name in expected} == expected
    assert context.request_id.get() == ""  # set only while the handler runs
