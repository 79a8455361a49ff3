"""The outbox relay and the inbox against the session's PostgreSQL and Redis.

Each test relays an aggregate type of its own to a queue of its own, so the
rows it relays and the stream it reads are its own. A relay killed between
publishing and marking publishes again, and a consumer's inbox applies the
message once; two relay processes keep every aggregate's events in order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from google.protobuf import json_format
from opentelemetry import trace
from redis.asyncio import Redis
from shop.order.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.inbox import inbox
from services.kit.outbox import Event, outbox
from services.kit.redis_client import create_redis
from services.kit.streams import Message, Queue, Worker, WorkerConfig
from services.kit.streams.relay import Relay, RelayConfig
from services.kit.uow import UnitOfWork
from services.launcher import PYTHONPATH, infra, procs
from services.launcher.platform import start_service
from tests.integration.test_queue_kit import Collector, _recording_provider


@dataclass(frozen=True)
class Servers:
    """Where the session's PostgreSQL and Redis listen."""

    database_url: str
    redis_url: str


@pytest.fixture
def servers(postgres_url: str, redis_url: str) -> Servers:
    return Servers(postgres_url, redis_url)


@dataclass
class Lane:
    """One test's aggregate type, queue and tenant."""

    engine: AsyncEngine
    redis: redis.Redis
    aggregate: str
    queue: str
    tenant: str

    def event(self, aggregate_id: str, total: int = 0) -> Event:
        contract = events_pb2.OrderClosed(
            order_id=aggregate_id, tenant_id=self.tenant, total_cents=total
        )
        return Event(self.aggregate, aggregate_id, self.tenant, "test.closed", contract)

    async def record(self, aggregate_id: str, total: int = 0) -> uuid.UUID:
        async with UnitOfWork(self.engine) as work:
            return await work.outbox.add(self.event(aggregate_id, total))

    def relay(self, async_redis: Redis, batch: int = 100) -> Relay:
        return Relay(self.engine, async_redis, {self.aggregate: self.queue}, RelayConfig(batch))

    def stream(self) -> list[tuple[str, str, int]]:
        """(message id, aggregate id, total) of every entry of the queue's stream, in order."""
        entries = self.redis.xrange(f"queue:{self.queue}")
        seen = []
        for _, fields in entries:
            closed = json_format.Parse(fields[b"payload"], events_pb2.OrderClosed())
            seen.append((fields[b"id"].decode(), closed.order_id, closed.total_cents))
        return seen

    async def unpublished(self) -> int:
        async with self.engine.connect() as conn:
            count = await conn.execute(
                sa.select(sa.func.count()).where(
                    outbox.c.aggregate_type == self.aggregate, outbox.c.published_at.is_(None)
                )
            )
            return int(count.scalar_one())


@pytest.fixture
async def lane(engine: AsyncEngine, redis_client: redis.Redis, tenant: str) -> AsyncIterator[Lane]:
    tag = uuid.uuid4().hex[:10]
    made = Lane(engine, redis_client, f"test-{tag}", f"relayed-{tag}", tenant)
    yield made
    async with engine.begin() as conn:
        await conn.execute(sa.delete(outbox).where(outbox.c.aggregate_type == made.aggregate))
        await conn.execute(sa.delete(inbox).where(inbox.c.consumer == made.queue))
    redis_client.delete(
        *(f"queue:{made.queue}{suffix}" for suffix in ("", ":delayed", ":dead", ":stats"))
    )


@pytest.fixture
async def async_redis(servers: Servers) -> AsyncIterator[Redis]:
    client = create_redis(servers.redis_url, timeout_s=5.0)
    yield client
    await client.aclose()


async def test_a_batch_publishes_in_seq_order_and_marks_the_rows(
    lane: Lane, async_redis: Redis
) -> None:
    ids = [await lane.record(f"agg-{n % 2}", total=n) for n in range(5)]
    batch = await lane.relay(async_redis).relay_once()
    assert (batch.published, batch.leader) == (5, True)
    assert lane.stream() == [(str(i), f"agg-{n % 2}", n) for n, i in enumerate(ids)]
    assert await lane.unpublished() == 0
    # Nothing is left to publish: a second batch publishes nothing again.
    assert (await lane.relay(async_redis).relay_once()).published == 0
    assert len(lane.stream()) == 5


async def test_a_relay_that_did_not_commit_publishes_again_and_the_inbox_applies_once(
    lane: Lane, async_redis: Redis
) -> None:
    first = await lane.record("agg-1", total=7)
    relay = lane.relay(async_redis)
    # Published, then the relay dies before its marks commit.
    async with lane.engine.connect() as conn:
        transaction = await conn.begin()
        batch, failure = await relay.publish_batch(conn)
        assert (batch.published, failure) == (1, None)
        await transaction.rollback()
    assert await lane.unpublished() == 1
    second = await lane.record("agg-1", total=8)
    assert (await relay.relay_once()).published == 2
    assert lane.stream() == [
        (str(first), "agg-1", 7),
        (str(first), "agg-1", 7),
        (str(second), "agg-1", 8),
    ]

    applied = await consume(lane, async_redis, expected=3)
    assert applied == [str(first), str(second)]


async def consume(lane: Lane, async_redis: Redis, expected: int) -> list[str]:
    """Run a worker on the lane's queue whose handler applies each message once
    (an inbox record and a follow-up outbox row in one unit of work); returns the
    ids applied, in order."""
    applied_type = f"{lane.aggregate}-applied"

    async def handle(message: Message) -> None:
        async with UnitOfWork(lane.engine) as work:
            if not await work.inbox.first_time(lane.queue, message.id):
                return
            closed = json_format.Parse(message.payload, events_pb2.OrderClosed())
            follow_up = Event(applied_type, message.id, message.tenant, "test.applied", closed)
            await work.outbox.add(follow_up)

    queue = Queue(async_redis, lane.queue)
    worker = Worker(queue, handle, WorkerConfig(consumer="relay-test", concurrency=1))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        deadline = time.monotonic() + 15
        while (await queue.stats()).processed < expected:
            assert time.monotonic() < deadline, "the worker did not process every message"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    async with lane.engine.begin() as conn:
        rows = await conn.execute(
            sa.delete(outbox)
            .where(outbox.c.aggregate_type == applied_type)
            .returning(outbox.c.aggregate_id, outbox.c.seq)
        )
        return [aggregate_id for aggregate_id, _ in sorted(rows, key=lambda row: row.seq)]


async def test_the_inbox_applies_a_message_once_under_concurrent_redelivery(
    lane: Lane,
) -> None:
    applications: list[int] = []

    async def deliver(n: int, fail: bool) -> bool:
        try:
            async with UnitOfWork(lane.engine) as work:
                if not await work.inbox.first_time(lane.queue, "m-1"):
                    return False
                await asyncio.sleep(0.2)  # the other deliveries wait on the record
                if fail:
                    raise RuntimeError("the first delivery's handler fails")
                await work.outbox.add(lane.event(f"applied-{n}"))
                applications.append(n)
                return True
        except RuntimeError:
            return False

    # The first delivery fails after recording: its record rolls back, so
    # exactly one of the others applies the message.
    first = asyncio.create_task(deliver(0, fail=True))
    await asyncio.sleep(0.05)
    others = await asyncio.gather(*[deliver(n, fail=False) for n in range(1, 4)])
    assert not await first
    assert sorted(others) == [False, False, True]
    assert len(applications) == 1
    async with lane.engine.connect() as conn:
        records = await conn.execute(
            sa.select(sa.func.count()).where(inbox.c.consumer == lane.queue)
        )
        assert records.scalar_one() == 1


def _relay_process(
    servers: Servers, lane: Lane, run_dir: Path, name: str, batch: int
) -> procs.Proc:
    target = f"{infra.HOST}:{procs.free_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": PYTHONPATH,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "RELAY_ROUTES": f"{lane.aggregate}={lane.queue}",
        "RELAY_BATCH": str(batch),
        "RELAY_POLL_MS": "20",
        "RELAY_GRPC_BIND": target,
    }
    return start_service(name, "", target, env, run_dir, module="services.relay")


@pytest.fixture
def relays(servers: Servers, lane: Lane, tmp_path: Path) -> Iterator[list[procs.Proc]]:
    """Two relay processes of the lane, stopped after the test."""
    with ExitStack() as stack:
        started = []
        for name in ("relay-a", "relay-b"):
            proc = _relay_process(servers, lane, tmp_path, name, batch=3)
            stack.callback(lambda p=proc: p.popen.poll() is None and procs.stop(p))
            started.append(proc)
        yield started


async def test_two_relay_processes_publish_each_event_once_in_order_per_aggregate(
    lane: Lane, relays: list[procs.Proc]
) -> None:
    written: dict[str, list[str]] = {f"agg-{a}": [] for a in range(4)}
    for n in range(60):
        aggregate = f"agg-{n % 4}"
        written[aggregate].append(str(await lane.record(aggregate, total=n)))
        if n % 7 == 0:
            await asyncio.sleep(0.03)  # let the relays take batches while rows arrive
    deadline = time.monotonic() + 20
    while await lane.unpublished():
        assert time.monotonic() < deadline, "the relays did not publish every row"
        await asyncio.sleep(0.05)
    stream = lane.stream()
    assert sorted(i for i, _, _ in stream) == sorted(
        i for ids in written.values() for i in ids
    )  # each once
    for aggregate, ids in written.items():
        assert [i for i, a, _ in stream if a == aggregate] == ids
    assert all(r.popen.poll() is None for r in relays)


async def test_a_relay_killed_between_publishing_and_marking_publishes_again(
    servers: Servers, lane: Lane, tmp_path: Path, async_redis: Redis
) -> None:
    row = await lane.record("agg-1", total=5)
    # With the row locked, the relay publishes it and then waits to mark it.
    async with lane.engine.connect() as conn:
        transaction = await conn.begin()
        await conn.execute(sa.select(outbox.c.id).where(outbox.c.id == row).with_for_update())
        proc = _relay_process(servers, lane, tmp_path, "relay-killed", batch=10)
        try:
            deadline = time.monotonic() + 15
            while not lane.stream():
                assert time.monotonic() < deadline, "the relay did not publish"
                await asyncio.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)
        finally:
            if proc.popen.poll() is None:
                procs.stop(proc)
        await transaction.rollback()
    assert await lane.unpublished() == 1
    # The killed relay's session holds the relay lock until PostgreSQL ends it.
    relay, deadline = lane.relay(async_redis), time.monotonic() + 15
    while not (batch := await relay.relay_once()).leader:
        assert time.monotonic() < deadline, "the killed relay's lock was never released"
        await asyncio.sleep(0.05)
    assert batch.published == 1
    assert lane.stream() == [(str(row), "agg-1", 5)] * 2
    assert await lane.unpublished() == 0
    assert await consume(lane, async_redis, expected=2) == [str(row)]


async def test_relays_of_one_database_take_turns(
    servers: Servers, lane: Lane, async_redis: Redis
) -> None:
    await lane.record("agg-1")
    other = db.create_engine(servers.database_url, pool_size=1)
    try:
        async with lane.engine.connect() as conn:
            transaction = await conn.begin()
            holding, _ = await lane.relay(async_redis).publish_batch(conn)
            waiting = await Relay(other, async_redis, {lane.aggregate: lane.queue}).relay_once()
            await transaction.commit()
    finally:
        await other.dispose()
    assert (holding.leader, holding.published) == (True, 1)
    assert (waiting.leader, waiting.published) == (False, 0)
    assert len(lane.stream()) == 1


async def test_a_relay_that_cannot_reach_redis_marks_nothing(
    lane: Lane, async_redis: Redis
) -> None:
    await lane.record("agg-1")
    unreachable = create_redis(f"redis://{infra.HOST}:{procs.free_port()}", timeout_s=1.0)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await lane.relay(unreachable).relay_once()
    finally:
        await unreachable.aclose()
    assert await lane.unpublished() == 1
    assert (await lane.relay(async_redis).relay_once()).published == 1
    assert len(lane.stream()) == 1


async def test_one_trace_runs_from_the_writer_through_the_relay_to_the_handler(
    lane: Lane, async_redis: Redis
) -> None:
    provider = _recording_provider()
    producers, consumers = Collector(f"publish {lane.queue}"), Collector(f"process {lane.queue}")
    batches = Collector("relay outbox")
    for collector in (producers, consumers, batches):
        provider.add_span_processor(collector)
    with provider.get_tracer("test").start_as_current_span("write") as write_span:
        event_id = await lane.record("traced", total=7)
    written = write_span.get_span_context()

    await lane.relay(async_redis).relay_once()
    # The batch is a trace of its own (it may carry many requests' rows), linked to
    # each row's writer.
    [batch] = batches.spans
    assert batch.parent is None
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [
        (written.trace_id, written.span_id)
    ]
    [producer] = producers.spans
    assert producer.kind == trace.SpanKind.PRODUCER
    assert producer.parent is not None
    assert (producer.context.trace_id, producer.parent.span_id) == (
        written.trace_id,
        written.span_id,
    )
    assert producer.attributes is not None
    assert producer.attributes["messaging.message.id"] == str(event_id)

    handled: list[str] = []

    async def handle(message: Message) -> None:
        handled.append(message.id)

    worker = Worker(
        Queue(async_redis, lane.queue), handle, WorkerConfig(consumer="trace-test", concurrency=1)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        deadline = time.monotonic() + 10
        while handled != [str(event_id)] or not consumers.spans:
            assert time.monotonic() < deadline, f"handled {handled}"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    [consumer] = consumers.spans
    assert consumer.parent is not None
    assert (consumer.context.trace_id, consumer.parent.span_id) == (
        written.trace_id,
        producer.context.span_id,
    )
