"""Run an export worker: `python -m services.order.exports` (config from the environment).

It consumes the exports queue with the shared queue kit (a reclaim takes over
the jobs of a worker that died, retries back off, dead letters after the last
attempt) and serves gRPC health on EXPORT_WORKER_GRPC_BIND; on SIGTERM it
stops reading, finishes the chunk in hand and stops.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import uvloop
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.redis_client import create_redis
from services.kit.server import run_worker
from services.kit.streams import Queue, Router, Worker
from services.order.exports.config import ExportWorkerConfig
from services.order.exports.runner import ExportRunner
from services.order.reporting import EXPORT_REQUESTED


@dataclass(frozen=True)
class ExportWorkerProcess:
    engine: AsyncEngine
    redis: Redis
    worker: Worker

    async def run(self, stop: asyncio.Event) -> None:
        await self.worker.run(stop)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.engine.dispose()


def routes(runner: ExportRunner) -> Router:
    """What the export worker takes: export requests, to the runner."""
    router = Router()
    router.route(EXPORT_REQUESTED, runner)
    return router


def bootstrap(config: ExportWorkerConfig) -> ExportWorkerProcess:
    """Wire one export worker process from its configuration."""
    # One connection per job in hand; the reader and the scheduler need Redis ones.
    engine = db.create_engine(config.database_url, pool_size=config.worker.concurrency)
    redis = create_redis(
        config.redis_url, connect_timeout_s=2.0, max_connections=config.worker.concurrency + 8
    )
    runner = ExportRunner(engine, config.export, config.worker.retry.max_attempts)
    worker = Worker(Queue(redis, config.queue), routes(runner), config.worker)
    return ExportWorkerProcess(engine, redis, worker)


async def main() -> None:
    config = ExportWorkerConfig.from_env()
    await run_worker("export-worker", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
