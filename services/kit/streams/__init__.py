"""The platform's queue kit on Redis Streams: publish, consume, retry, dead-letter.

Every worker (events, the order pipeline, the outbox relay, notifications)
runs on it:

    queue = Queue(redis, "events")
    await queue.publish(Message(id=event_id, tenant=tenant, type="shipped", payload=body))
    await Worker(queue, handle, WorkerConfig(consumer=f"{host}-{pid}")).run(stop)

Delivery is at-least-once: a message is acked only after its handler
returned, so handlers must be idempotent on `Message.id`. A failed attempt
waits out a full-jitter backoff in the delayed set (holding no handler slot)
and is dead-lettered after `RetryPolicy.max_attempts`, or at once when the
handler raises `Permanent`. A handler raises `Defer` when a dependency is down
for everyone (an open breaker): the message waits without spending an attempt. A message whose consumer died is taken over after
the visibility timeout. `DeadLetters` lists, replays and deletes dead letters
per tenant. Keys per queue are described in `services.kit.streams.queue`.
"""

from services.kit.streams.dead import DeadLetter, DeadLetters, is_dead_id
from services.kit.streams.message import Message
from services.kit.streams.policy import Defer, Handler, Permanent, RetryPolicy, WorkerConfig
from services.kit.streams.queue import Queue, QueueStats
from services.kit.streams.worker import Worker

__all__ = [
    "DeadLetter",
    "DeadLetters",
    "Defer",
    "Handler",
    "Message",
    "Permanent",
    "Queue",
    "QueueStats",
    "RetryPolicy",
    "Worker",
    "WorkerConfig",
    "is_dead_id",
]
