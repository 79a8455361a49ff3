"""Run an event worker: `python -m services.event.worker` (config from the environment).

It consumes the events queue with the shared queue kit: a bounded number of
handlers at once, delayed retries with backoff, dead letters after the last
attempt, and on SIGTERM it stops reading and finishes what it holds.

Its router sends every courier event type (any type the intake accepts,
`domain.EVENT_TYPE`: couriers name their own types and the handler reads the
status from the event's data) to the courier-event handler; the intake
refuses any other type with a 400, so only a message written past it can be
dead-lettered as of an unknown type.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uvloop
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from services.event.config import WorkerProcessConfig
from services.event.domain import EVENT_TYPE
from services.event.handler import CourierEventHandler
from services.kit.mongo import create_mongo
from services.kit.redis_client import create_redis
from services.kit.server import run_worker
from services.kit.streams import Handler, Queue, Router, Worker
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


def routes(courier_events: Handler) -> Router:
    """What the event worker takes: every courier event type, to its handler."""
    router = Router()
    router.route_matching(EVENT_TYPE, courier_events)
    return router


def bootstrap(config: WorkerProcessConfig) -> EventWorkerProcess:
    """Wire one worker process from its configuration."""
    # Each handler settles its message on a connection of its own; the reader and
    # the scheduler need theirs.
    redis = create_redis(
        config.redis_url, connect_timeout_s=2.0, max_connections=config.worker.concurrency + 8
    )
    mongo = create_mongo(config.mongo_url)
    routing = Upstream("routing", config.routing_url, config.routing)
    handler = CourierEventHandler(mongo.get_default_database(), routing)
    worker = Worker(Queue(redis, config.queue), routes(handler), config.worker)
    return EventWorkerProcess(redis, mongo, routing, worker)


async def main() -> None:
    config = WorkerProcessConfig.from_env()
    await run_worker("event-worker", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
