"""The platform's queue kit on Redis Streams: publish, route, consume, retry, dead-letter.

Every worker (events, the order pipeline, the outbox relay, notifications)
runs on it:

    queue = Queue(redis, "orders")
    await queue.publish(Message(id=order_id, tenant=tenant, type="orders.closed", payload=body))

    router = Router()
    router.route("orders.closed", close_order)  # or @router.route("orders.closed")
    worker = Worker(queue, router, WorkerConfig(consumer=f"{host}-{pid}"), middleware=[timing])
    await worker.run(stop)

A `Router` (itself a `Handler`) sends each message to the handler of its
`Message.type`; a type nobody routes is dead-lettered at once
(`UnknownMessageType`), and routing a type twice fails at start-up.
Middleware (`async def layer(message, next)`) runs around the handler on
every attempt, outermost first, inside the kit's `Tracing` (the consumer
span and the request id), which is on by default; a layer sees every outcome
but cannot change how it is settled (see `services.kit.streams.middleware`).

Delivery is at-least-once: a message is acked only after its handler
returned, so handlers must be idempotent on `Message.id`. A failed attempt
waits out a full-jitter backoff in the delayed set (holding no handler slot)
and is dead-lettered after `RetryPolicy.max_attempts`, or at once when the
handler raises `Permanent`. A handler raises `Defer` when a dependency is down
for everyone (an open breaker): the message waits without spending an
attempt. A message whose consumer died is taken over after the visibility
timeout. `DeadLetters` lists, replays and deletes dead letters per tenant.
Keys per queue are described in `services.kit.streams.queue`. `PublishCoalescer`
sends concurrent callers' `publish_once` in one pipelined round trip.
"""

from services.kit.streams.coalescer import OncePublisher, PublishCoalescer
from services.kit.streams.dead import DeadLetter, DeadLetters, is_dead_id
from services.kit.streams.message import Message
from services.kit.streams.middleware import HandlerTimeout, Middleware, Tracing
from services.kit.streams.policy import Defer, Handler, Permanent, RetryPolicy, WorkerConfig
from services.kit.streams.queue import Queue, QueueStats
from services.kit.streams.routing import Router, UnknownMessageType
from services.kit.streams.worker import Worker

__all__ = [
    "DeadLetter",
    "DeadLetters",
    "Defer",
    "Handler",
    "HandlerTimeout",
    "Message",
    "Middleware",
    "OncePublisher",
    "Permanent",
    "PublishCoalescer",
    "Queue",
    "QueueStats",
    "RetryPolicy",
    "Router",
    "Tracing",
    "UnknownMessageType",
    "Worker",
    "WorkerConfig",
    "is_dead_id",
]
