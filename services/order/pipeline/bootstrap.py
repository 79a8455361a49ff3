"""Composition root of the order pipeline: builds the real dependencies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, grpc_client
from services.kit.redis_client import create_redis
from services.kit.streams import Queue, Worker
from services.kit.upstream import Upstream
from services.order.pipeline.config import PipelineConfig
from services.order.pipeline.handlers import routes
from services.order.pipeline.provider import PaymentProvider
from services.order.pipeline.reconciler import Reconciler
from services.order.pipeline.steps import Pipeline
from services.order.stock import Reservations


@dataclass(frozen=True)
class PipelineProcess:
    engine: AsyncEngine
    redis: Redis
    channel: grpc.aio.Channel
    payments: Upstream
    pipeline: Pipeline
    worker: Worker
    reconciler: Reconciler

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self.worker.run(stop), self.reconciler.run(stop))

    async def close(self) -> None:
        await self.payments.aclose()
        await self.channel.close(None)
        await self.redis.aclose()
        await self.engine.dispose()


def bootstrap(config: PipelineConfig, *, engine: AsyncEngine | None = None) -> PipelineProcess:
    """Wire one pipeline process; pass an engine to share one (tests), else it is created."""
    if engine is None:
        engine = db.create_engine(config.database_url, pool_size=config.db_pool_size)
    # Each handler settles its message on a connection of its own; the reader and
    # the scheduler need theirs.
    redis = create_redis(
        config.redis_url, connect_timeout_s=2.0, max_connections=config.worker.concurrency + 8
    )
    channel = grpc_client.dial(config.inventory_target, config.server.tls)
    upstream = Upstream("payments", config.payments_url, config.payments)
    provider = PaymentProvider(upstream, config.currency)
    pipeline = Pipeline(engine, Reservations(channel), provider, hold_s=config.hold_s)
    worker = Worker(Queue(redis, config.queue), routes(pipeline), config.worker)
    reconciler = Reconciler(engine, provider, pipeline, config.reconciler)
    return PipelineProcess(engine, redis, channel, upstream, pipeline, worker, reconciler)
