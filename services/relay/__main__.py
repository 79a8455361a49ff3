"""Run an outbox relay: `python -m services.relay` (config from the environment).

It publishes the outbox's unpublished rows to their queues and marks them
(`services.kit.streams.relay`), and sweeps the kit's tables of expired
idempotency keys, old inbox records and old published outbox rows
(`services.kit.housekeeping`), with a health endpoint on RELAY_GRPC_BIND; on
SIGTERM it finishes its batch and stops.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import uvloop
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.housekeeping import Housekeeping
from services.kit.redis_client import create_redis
from services.kit.server import run_worker
from services.kit.streams.relay import Relay
from services.relay.config import RelayProcessConfig


@dataclass(frozen=True)
class RelayProcess:
    engine: AsyncEngine
    redis: Redis
    relay: Relay
    housekeeping: Housekeeping

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self.relay.run(stop), self.housekeeping.run(stop))

    async def close(self) -> None:
        await self.redis.aclose()
        await self.engine.dispose()


def bootstrap(config: RelayProcessConfig) -> RelayProcess:
    """Wire one relay process from its configuration."""
    # One batch at a time and one sweep at a time: a database connection each, and
    # one Redis connection.
    engine = db.create_engine(config.database_url, pool_size=2)
    redis = create_redis(config.redis_url, timeout_s=5.0, max_connections=2)
    relay = Relay(engine, redis, config.routes, config.relay)
    return RelayProcess(engine, redis, relay, Housekeeping(engine, config.housekeeping))


async def main() -> None:
    config = RelayProcessConfig.from_env()
    await run_worker("relay", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
