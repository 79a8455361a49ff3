"""Settling a delivered message: acked, delayed for a retry, or dead-lettered.

Each outcome is one MULTI, so a message is never acked without its retry or
dead letter being written, nor written twice by one worker. Acking also
deletes the stream entry: a settled message has no reason to stay, and the
stream's length then means work not yet done. Every settlement is counted in
`shop_queue_settled_total` by its outcome (services.kit.metrics).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from services.kit import metrics
from services.kit.streams.message import Message, encode, now_ms
from services.kit.streams.queue import Queue, stream_fields

# Retries moved back to the stream per scheduler run; a full batch runs again at once.
PROMOTE_BATCH = 100


async def ack(queue: Queue, entry_id: str) -> None:
    """The handler succeeded."""
    keys = queue.keys
    pipe = queue.redis.pipeline(transaction=True)
    pipe.xack(keys.stream, keys.group, entry_id)
    pipe.xdel(keys.stream, entry_id)
    pipe.hincrby(keys.stats, "processed", 1)
    await pipe.execute()
    metrics.QUEUE_SETTLED.labels(queue.name, "processed").inc()


async def retry_later(
    queue: Queue, failed: Message, due_ms: int, *, counter: str = "retried"
) -> None:
    """`failed` (attempt and last_error already updated) waits in the delayed set until
    `due_ms`; `counter` says why ("retried", or "deferred" when no attempt was spent)."""
    keys = queue.keys
    pipe = queue.redis.pipeline(transaction=True)
    pipe.zadd(keys.delayed, {delayed_member(failed): due_ms})
    pipe.xack(keys.stream, keys.group, failed.entry_id)
    pipe.xdel(keys.stream, failed.entry_id)
    pipe.hincrby(keys.stats, counter, 1)
    await pipe.execute()
    metrics.QUEUE_SETTLED.labels(queue.name, counter).inc()


async def dead_letter(
    queue: Queue, entry_id: str, fields: Mapping[str, bytes], error: str, attempts: int
) -> None:
    """Move the delivery `entry_id` (stored as `fields`) to the dead stream, with why."""
    keys = queue.keys
    dead = stream_fields(fields)
    dead.update(error=error.encode(), attempts=attempts, dead_at_ms=now_ms())
    pipe = queue.redis.pipeline(transaction=True)
    pipe.xadd(keys.dead, dead, maxlen=queue.maxlen, approximate=True)
    pipe.xack(keys.stream, keys.group, entry_id)
    pipe.xdel(keys.stream, entry_id)
    pipe.hincrby(keys.stats, "dead_lettered", 1)
    await pipe.execute()
    metrics.QUEUE_SETTLED.labels(queue.name, "dead_lettered").inc()


def dead_fields(message: Message, error: str, attempts: int) -> dict[str, bytes]:
    """The fields a message is dead-lettered with: its last attempt and error folded in."""
    return encode(dataclasses.replace(message, attempt=attempts, last_error=error))


def delayed_member(message: Message) -> str:
    """The delayed set's member for `message`: its fields as JSON, for the scheduler script.

    The failed entry's id makes the member unique, so two failed deliveries
    of one message id (a duplicate publish) never collapse into one retry.
    """
    fields = {name: value.decode() for name, value in encode(message).items() if name != "payload"}
    # cjson strings cannot carry arbitrary bytes; the script turns hex back into bytes.
    fields["payload"] = message.payload.hex()
    fields["failed_entry"] = message.entry_id
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


async def promote_due(queue: Queue, at_ms: int) -> tuple[int, int]:
    """Move retries due by `at_ms` back to the stream: (moved, undecodable)."""
    keys = queue.keys
    moved, bad = await queue.scripts.promote_due(
        keys=[keys.delayed, keys.stream, keys.dead], args=[at_ms, PROMOTE_BATCH, queue.maxlen]
    )
    return int(moved), int(bad)
