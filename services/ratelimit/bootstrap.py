"""Composition root of the rate-limit service: builds the real dependencies."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from redis.asyncio import Redis

from services.kit.redis_client import create_redis
from services.kit.server import Registration
from services.ratelimit.config import RateLimitConfig
from services.ratelimit.servicer import RateLimitServicer
from services.ratelimit.store import RedisCounters
from services.ratelimit.usecases import RateLimiter

SERVICE_NAME: str = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name


@dataclass(frozen=True)
class RateLimitApp:
    redis: Redis
    limiter: RateLimiter
    registrations: list[Registration]

    async def close(self) -> None:
        await self.redis.aclose()


def bootstrap(config: RateLimitConfig, *, redis: Redis | None = None) -> RateLimitApp:
    """Wire the service; pass `redis` to share a client (tests), else one is created."""
    if redis is None:
        # redis-py retries with backoff by default; by then Envoy has given up
        # on us, so fail at once and let it fail open.
        redis = create_redis(config.redis_url, timeout_s=config.redis_timeout_s, retries=False)
    limiter = RateLimiter(config.rules, RedisCounters(redis))
    servicer = RateLimitServicer(limiter)

    def add_to(server: grpc.aio.Server) -> None:
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(servicer, server)

    # Envoy calls this service, not users: there is no identity to check.
    registration = Registration(SERVICE_NAME, add_to, enforce_access=False)
    return RateLimitApp(redis, limiter, [registration])
