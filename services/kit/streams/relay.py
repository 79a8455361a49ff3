"""The outbox relay: outbox rows to Redis streams, at least once, in order per aggregate.

One batch is one PostgreSQL transaction: take the relay lock, read the
oldest unpublished rows in `seq` order, `Queue.publish` each to the queue its
aggregate type routes to (message id: the outbox row id; type: the event
type; payload: the row's JSON; traceparent: the writer's), set
`published_at` on what was published, commit.

At least once: a row is marked only after Redis accepted it, and the mark
commits after the publish. A relay that dies in between (or whose commit
fails) leaves the row unpublished, and the next batch publishes it again
under the same message id, which is what consumers deduplicate on
(`services.kit.inbox`). Nothing is lost: a row is never marked unless
published. When Redis fails halfway, the rows published so far are marked
and the rest wait, so a later row of an aggregate never goes out before an
earlier one.

In order per aggregate, with any number of relay processes: batches run
under one transaction-scoped advisory lock, so only one relay publishes at a
time (a leader per batch, not per process: whichever relay takes the lock
next sees the previous batch's marks, because the lock is released only when
that batch has committed, or aborted with its connection). Rows go out in
`seq` order, which per aggregate is commit order (see `services.kit.outbox`).
A relay cut off from PostgreSQL mid-batch may go on publishing that batch
after another has taken over; each relay publishes from the oldest unmarked
row in order, so those late copies are duplicates (skipped by the inbox) and
the first copy of every event still comes after its aggregate's earlier ones.
Parallel relays with `SKIP LOCKED` would be faster but let a second relay
publish an aggregate's next event while the first still holds its previous
one; one writer at a time is simple, and a batch of a hundred rows costs a
few milliseconds of Redis round trips. Routes are per aggregate type, not
per event type: order within an aggregate only means something inside one
stream. Each publish is one stream entry: deduplication belongs to the
consumer, which has to handle redelivery anyway.

The order is the stream's; a consumer keeps it only if it handles one
message of an aggregate at a time (retries go to the back of the queue).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace

import sqlalchemy as sa
from opentelemetry import propagate, trace
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit import db, metrics, outbox
from services.kit.backoff import full_jitter, pause
from services.kit.config import ConfigError
from services.kit.streams.message import Message, current_traceparent
from services.kit.streams.queue import Queue

log = logging.getLogger("shop.relay")
tracer = trace.get_tracer("shop.relay")
# Every relay of one database contends for this advisory lock (a stable
# 32-bit key, so it reads the same in pg_locks everywhere).
RELAY_LOCK = zlib.crc32(b"shop.outbox.relay")


@dataclass(frozen=True)
class RelayConfig:
    """At most `batch` rows per transaction; `poll_ms` between looks when idle."""

    batch: int = 100
    poll_ms: int = 200
    retry_cap_s: float = 5.0
    lock_key: int = RELAY_LOCK

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"the relay batch must be at least 1, got {self.batch}")
        if self.poll_ms < 1:
            raise ConfigError(f"the relay poll interval must be at least 1 ms, got {self.poll_ms}")


@dataclass(frozen=True)
class Batch:
    """What one batch did: rows published, and whether this relay held the lock."""

    published: int
    leader: bool


def message_of(row: outbox.Pending) -> Message:
    """The queue message of an outbox row."""
    payload = json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()
    return Message(
        id=str(row.id),
        tenant=row.tenant_id,
        type=row.event_type,
        payload=payload,
        traceparent=row.traceparent,
    )


def _writers(rows: list[outbox.Pending]) -> list[trace.SpanContext]:
    """The span context of each row's writer, for the rows written inside one."""
    found = []
    for row in rows:
        if row.traceparent:
            writer = propagate.extract({"traceparent": row.traceparent})
            found.append(trace.get_current_span(writer).get_span_context())
    return found


class Relay:
    """Moves outbox rows of the routed aggregate types to their queues."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        routes: Mapping[str, str],
        config: RelayConfig = RelayConfig(),
    ) -> None:
        if not routes:
            raise ConfigError("the relay needs at least one route (aggregate type -> queue)")
        self._engine = engine
        self._queues = {aggregate: Queue(redis, name) for aggregate, name in routes.items()}
        self.config = config
        self._rng = random.Random()

    async def relay_once(self) -> Batch:
        """One batch in its own transaction; RedisError after marking what was published."""
        async with self._engine.begin() as conn:
            batch, failure = await self.publish_batch(conn)
        if failure is not None:
            raise failure
        return batch

    async def publish_batch(self, conn: AsyncConnection) -> tuple[Batch, RedisError | None]:
        """Publish one batch inside the caller's transaction and mark it there.

        The marks count only if the caller commits; if it does not, the rows
        are published again by a later batch.
        """
        lock = sa.select(sa.func.pg_try_advisory_xact_lock(self.config.lock_key))
        if not (await conn.execute(lock)).scalar_one():
            return Batch(0, leader=False), None
        rows = await outbox.pending(conn, self._queues.keys(), self.config.batch)
        if not rows:
            return Batch(0, leader=True), None
        published: list[uuid.UUID] = []
        failure: RedisError | None = None
        # One span for the batch, linked to every row's writer: a batch carries many
        # requests' events, so it belongs to none of their traces.
        with tracer.start_as_current_span(
            "relay outbox",
            links=[trace.Link(context) for context in _writers(rows)],
            attributes={"messaging.batch.message_count": len(rows)},
        ):
            for row in rows:
                try:
                    await self._publish(row)
                except RedisError as exc:
                    failure = exc
                    break
                published.append(row.id)
                metrics.OUTBOX_PUBLISHED.labels(row.aggregate_type).inc()
            await outbox.mark_published(conn, published)
        return Batch(len(published), leader=True), failure

    async def sample_lag(self) -> None:
        """The age of each route's oldest unpublished row into `shop_outbox_lag_seconds`."""
        async with db.reads(self._engine).connect() as conn:
            lags = await outbox.lag_seconds(conn, self._queues.keys())
        for route, seconds in lags.items():
            metrics.OUTBOX_LAG.labels(route).set(seconds)

    async def _publish(self, row: outbox.Pending) -> None:
        """Publish one row in a producer span, child of the span that wrote the row; the
        message carries the producer span's context, so the consumer's span is its child
        and one trace runs from the request through the outbox and the stream to the
        handler."""
        queue = self._queues[row.aggregate_type]
        writer = propagate.extract({"traceparent": row.traceparent}) if row.traceparent else None
        with tracer.start_as_current_span(
            f"publish {queue.name}",
            context=writer,
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "redis",
                "messaging.operation.type": "send",
                "messaging.destination.name": queue.name,
                "messaging.message.id": str(row.id),
                "shop.outbox.seq": row.seq,
            },
        ):
            message = message_of(row)
            await queue.publish(
                replace(message, traceparent=current_traceparent() or message.traceparent)
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; a failing database or Redis is retried with backoff.
        Meanwhile each scrape of the process's metrics reads the outbox lag."""
        unwatch = metrics.on_scrape(self.sample_lag)
        try:
            await self._relay(stop)
        finally:
            unwatch()

    async def _relay(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                batch = await self.relay_once()
            except (RedisError, SQLAlchemyError, OSError) as exc:
                wait_s = full_jitter(
                    self._rng,
                    failures,
                    base_s=self.config.poll_ms / 1000,
                    cap_s=self.config.retry_cap_s,
                )
                failures += 1
                log.warning(
                    "outbox relay failed; retrying",
                    extra={"error": type(exc).__name__, "retry_in_s": round(wait_s, 3)},
                )
                await pause(stop, wait_s)
                continue
            failures = 0
            if batch.published < self.config.batch:
                await pause(stop, self.config.poll_ms / 1000)
