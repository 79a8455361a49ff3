"""The queue consumer every worker process runs: bounded, at-least-once, graceful.

One loop per process reads from the consumer group only when a handler slot
is free, asking for exactly as many messages as there are free slots, so
tasks never pile up and a slow handler pushes back on Redis instead of on
memory. Each message is acked (and deleted) only after its handler returned;
a failure is settled into the delayed set or the dead stream (see
`outcomes`), so a waiting retry holds no slot.

Alongside, in every process, the scheduler moves due retries back to the
stream, and the loop reclaims messages a stopped consumer left pending longer
than the visibility timeout (every half timeout, and whenever a read found
nothing). A message delivered more than `retry.max_attempts` times is a
poison message that keeps killing its consumers: it is dead-lettered, not run.

Stopping: once `stop` is set the loop reads nothing new, waits for the
handlers in flight (each ends within the handler timeout and settles its
message) and returns. Cancelling `run` instead abandons the handlers; their
messages stay pending and are reclaimed by another worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.kit import metrics
from services.kit.backoff import pause
from services.kit.config import ConfigError
from services.kit.streams import outcomes
from services.kit.streams.message import Fields, as_text, now_ms
from services.kit.streams.middleware import Metrics, Middleware, Tracing
from services.kit.streams.policy import Handler, WorkerConfig
from services.kit.streams.processing import Processor
from services.kit.streams.queue import Queue
from services.kit.streams.routing import Router

log = logging.getLogger("shop.queue")
# How long to wait before trying Redis again after a failed read or group creation.
REDIS_RETRY_S = 1.0


class Worker:
    """Consumes one queue with at most `config.concurrency` handlers at once.

    `handler` takes every message (a `Router` sends each to the handler of its
    type). `middleware` runs around it on every attempt, outermost first, inside
    the kit's `Tracing`, which `tracing=False` leaves out, and `Metrics` (see
    `middleware`). While it runs, each scrape of the process's metrics reads the
    queue's lengths (`shop_queue_depth_messages`).
    """

    def __init__(
        self,
        queue: Queue,
        handler: Handler,
        config: WorkerConfig,
        *,
        middleware: Sequence[Middleware] = (),
        tracing: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        _check_client(queue.redis, config)
        if isinstance(handler, Router) and not (handler.types or handler.patterns):
            raise ConfigError(f"the router of the {queue.name!r} worker routes no message type")
        self._queue = queue
        self._config = config
        self._router = handler if isinstance(handler, Router) else None
        layers: list[Middleware] = [Tracing(queue)] if tracing else []
        layers.append(Metrics(queue))
        self._processor = Processor(
            queue, handler, config, rng or random.Random(), [*layers, *middleware]
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._reclaim_every_s = config.visibility_timeout_s / 2
        self._reclaim_at = 0.0  # time.monotonic() of the next reclaim; 0: at once
        self._reclaim_cursor = "0-0"

    @property
    def in_flight(self) -> int:
        """Handlers running now (never more than `concurrency`)."""
        return len(self._tasks)

    @property
    def router(self) -> Router | None:
        """The router when the handler is one: its `types` and `patterns` are what this
        worker takes. None when one handler takes every message."""
        return self._router

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish the handlers in flight and return."""
        routes = {"types": ["*"], "patterns": []}
        if self._router is not None:
            routes = {"types": list(self._router.types), "patterns": list(self._router.patterns)}
        log.info("consuming", extra={"queue": self._queue.name, **routes})
        await self._ensure_group(stop)
        scheduler = asyncio.create_task(self._schedule(stop), name=f"{self._queue} scheduler")
        unwatch = metrics.on_scrape(self._sample)
        try:
            await self._consume(stop)
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        finally:
            # Nothing is left after a graceful stop; when run itself was cancelled
            # or failed, the rest is abandoned (and reclaimed elsewhere).
            unwatch()
            scheduler.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(scheduler, *self._tasks, return_exceptions=True)

    async def _consume(self, stop: asyncio.Event) -> None:
        config = self._config
        while not stop.is_set():
            free = config.concurrency - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                if time.monotonic() >= self._reclaim_at:
                    await self._reclaim(free)
                    self._reclaim_at = time.monotonic() + self._reclaim_every_s
                    continue
                entries = await self._read(free)
            except (RedisError, OSError) as exc:
                # Also inside a script's error ("... @user_script ... NOGROUP ...").
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    await self._ensure_group(stop)  # the stream was deleted under us
                    continue
                log.warning(
                    "queue read failed", extra={"queue": self._queue.name, "error": str(exc)}
                )
                await pause(stop, REDIS_RETRY_S)
                continue
            if not entries:
                self._reclaim_at = 0.0  # idle: a good moment to look for abandoned messages
            for entry_id, fields in entries:
                self._start(entry_id, fields)

    async def _sample(self) -> None:
        """The queue's lengths into `shop_queue_depth_messages` (on each metrics scrape)."""
        stats = await self._queue.stats()
        for state, value in (
            ("stream", stats.length),
            ("pending", stats.pending),
            ("delayed", stats.delayed),
            ("dead", stats.dead),
        ):
            metrics.QUEUE_DEPTH.labels(self._queue.name, state).set(value)

    def _start(self, entry_id: str, fields: Fields | None) -> None:
        task = asyncio.create_task(self._processor.process(entry_id, fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, count: int) -> list[tuple[str, Fields | None]]:
        keys = self._queue.keys
        # Never block past the next reclaim, so reclaiming keeps its pace on a quiet queue.
        until_reclaim_ms = int((self._reclaim_at - time.monotonic()) * 1000)
        block_ms = max(1, min(self._config.block_ms, until_reclaim_ms))
        reply = await self._queue.redis.xreadgroup(
            keys.group, self._config.consumer, {keys.stream: ">"}, count=count, block=block_ms
        )
        return [(as_text(entry_id), fields) for entry_id, fields in _entries(reply)]

    async def _reclaim(self, free: int) -> None:
        """Take over messages idle longer than the visibility timeout, up to `free` of them."""
        keys, retry = self._queue.keys, self._config.retry
        cursor, claimed = await self._queue.scripts.reclaim(
            keys=[keys.stream, keys.stats],
            args=[
                keys.group,
                self._config.consumer,
                round(self._config.visibility_timeout_s * 1000),
                self._reclaim_cursor,
                free,
                retry.max_attempts,
            ],
        )
        # Continuing from the cursor reaches the whole pending list however long it is.
        self._reclaim_cursor = as_text(cursor)
        for raw_id, flat, deliveries in claimed:
            metrics.QUEUE_RECLAIMED.labels(self._queue.name).inc()
            entry_id = as_text(raw_id)
            fields: Fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if deliveries > retry.max_attempts:
                await self._processor.poison(entry_id, fields, deliveries)
                continue
            log.warning(
                "message reclaimed from a stopped consumer",
                extra={
                    "queue": self._queue.name,
                    "entry_id": entry_id,
                    "message_id": fields.get(b"id", b"").decode(errors="replace"),
                    "deliveries": deliveries,
                },
            )
            self._start(entry_id, fields)

    async def _ensure_group(self, stop: asyncio.Event) -> None:
        keys = self._queue.keys
        while not stop.is_set():
            try:
                # From "0": a group created after messages were published still gets them.
                await self._queue.redis.xgroup_create(
                    keys.stream, keys.group, id="0", mkstream=True
                )
                return
            except ResponseError as exc:
                if str(exc).startswith("BUSYGROUP"):
                    return
                error = str(exc)
            except (RedisError, OSError) as exc:
                error = str(exc)
            log.warning(
                "cannot create the consumer group",
                extra={"queue": self._queue.name, "error": error},
            )
            await pause(stop, REDIS_RETRY_S)

    async def _schedule(self, stop: asyncio.Event) -> None:
        """Move due retries back to the stream until `stop`; safe in any number of processes."""
        while not stop.is_set():
            try:
                moved, bad = await outcomes.promote_due(self._queue, now_ms())
                if bad:
                    log.error(
                        "undecodable delayed retries moved to the dead stream",
                        extra={"queue": self._queue.name, "count": bad},
                    )
                if moved + bad >= outcomes.PROMOTE_BATCH:
                    continue  # more may be due: no need to wait
            except (RedisError, OSError) as exc:
                log.warning(
                    "retry scheduler failed", extra={"queue": self._queue.name, "error": str(exc)}
                )
            await pause(stop, self._config.scheduler_interval_s)


def _check_client(redis: Redis, config: WorkerConfig) -> None:
    """Refuse a client that would make the worker fail later, in ways hard to trace back."""
    pool = redis.connection_pool
    timeout = pool.connection_kwargs.get("socket_timeout")
    if timeout is not None and timeout * 1000 <= config.block_ms:
        raise ConfigError(
            f"the Redis client's socket timeout ({timeout}s) must exceed the worker's "
            f"blocking read ({config.block_ms} ms); give the worker its own client"
        )
    # Every handler settles on its own connection, plus the reader and the scheduler.
    needed = config.concurrency + 2
    limit = getattr(pool, "max_connections", None)
    if isinstance(limit, int) and limit < needed:
        raise ConfigError(
            f"the Redis pool allows {limit} connections; concurrency {config.concurrency} "
            f"needs at least {needed}"
        )


def _entries(reply: Any) -> Iterator[tuple[bytes, Fields | None]]:
    """The entries of an XREADGROUP reply in any of redis-py's shapes.

    RESP2: [[stream, entries]]; RESP3: {stream: [entries]}; unified: {stream: entries}.
    Entries themselves are (id, fields) tuples.
    """
    if not reply:
        return
    streams = reply.values() if isinstance(reply, dict) else (entries for _, entries in reply)
    for entries in streams:
        if entries and isinstance(entries[0], list):
            entries = entries[0]
        yield from entries
