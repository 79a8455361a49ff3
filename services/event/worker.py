"""Run an event worker: `python -m services.event.worker` (config from the environment).

It consumes the events queue with the shared queue kit: a bounded number of
handlers at once, delayed retries with backoff, dead letters after the last
attempt, and on SIGTERM it stops reading and finishes what it holds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uvloop
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from services.event.config import WorkerProcessConfig
from services.event.handler import CourierEventHandler
from services.kit.redis_client import create_redis
from services.kit.server import run_worker
from services.kit.streams import Queue, Worker
from services.kit.upstream import Upstream


@dataclass(frozen=True)
class EventWorkerProcess:
    redis: Redis
    mongo: AsyncMongoClient[dict[str, Any]]
    routing: Upstream
    worker: Worker

    async def run(self, stop: asyncio.Event) -> None:
        await self.worker.run(stop)

    async def close(self) -> None:
        await self.routing.aclose()
        await self.mongo.close()
        await self.redis.aclose()


def bootstrap(config: WorkerProcessConfig) -> EventWorkerProcess:
    """Wire one worker process from its configuration."""
    # Each handler settles its message on a connection of its own; the reader and
    # the scheduler need theirs.
    redis = create_redis(
        config.redis_url, connect_timeout_s=2.0, max_connections=config.worker.concurrency + 8
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(config.mongo_url, tz_aware=True)
    routing = Upstream("routing", config.routing_url, config.routing)
    handler = CourierEventHandler(mongo.get_default_database(), routing)
    worker = Worker(Queue(redis, config.queue), handler, config.worker)
    return EventWorkerProcess(redis, mongo, routing, worker)


async def main() -> None:
    config = WorkerProcessConfig.from_env()
    await run_worker("event-worker", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
