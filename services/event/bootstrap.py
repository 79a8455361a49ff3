"""Composition root of the event gateway: builds the real dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc
from redis.asyncio import Redis
from shop.event.v1 import event_pb2, event_pb2_grpc

from services.event.config import EventConfig
from services.event.deadletters import DeadLetterAdmin
from services.event.intake import EventIntake
from services.event.servicer import EventServicer
from services.kit.cursor import CursorCodec
from services.kit.redis_client import create_redis
from services.kit.server import Registration
from services.kit.streams import DeadLetters, PublishCoalescer, Queue

SERVICE_NAME = event_pb2.DESCRIPTOR.services_by_name["EventService"].full_name


@dataclass(frozen=True)
class EventApp:
    redis: Redis
    registrations: list[Registration]

    async def close(self) -> None:
        await self.redis.aclose()


def bootstrap(config: EventConfig, *, redis: Redis | None = None) -> EventApp:
    """Wire the service; pass a Redis client to share one (tests), else it is created."""
    if redis is None:
        # Ingest takes one connection (its publishes are coalesced); the dead-letter
        # admin waits for one of a bounded set rather than failing when all are busy,
        # and a short timeout turns a hung Redis into a quick 503, never a hung sender.
        redis = create_redis(
            config.redis_url,
            timeout_s=config.redis_timeout_s,
            max_connections=config.redis_connections,
            blocking=True,
        )
    events = Queue(redis, config.queue)
    intake = EventIntake(
        # Concurrent deliveries share one pipelined round trip to Redis.
        PublishCoalescer(events),
        config.sources,
        config.default_source,
        config.max_body_bytes,
        max_future_skew=timedelta(seconds=config.max_future_skew_s),
    )
    # Every queue whose dead letters admins manage from here.
    dead_letters = DeadLetterAdmin(
        {config.queue: DeadLetters(events)},
        CursorCodec(config.cursor_secret),
        default=config.queue,
    )
    servicer = EventServicer(intake, dead_letters)

    def add_to(server: grpc.aio.Server) -> None:
        event_pb2_grpc.add_EventServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    return EventApp(redis, [Registration(SERVICE_NAME, add_to)])
