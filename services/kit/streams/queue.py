"""A named queue on Redis Streams: its keys, publishing, and its counters.

Keys of the queue `{name}`:

- queue:{name}          stream of ready messages; consumer group `{name}`
- queue:{name}:delayed  ZSET of failed messages waiting for their retry (score: due ms)
- queue:{name}:dead     stream of dead letters (message fields + error, attempts, dead_at_ms)
- queue:{name}:stats    HASH of counters: processed, retried, deferred, dead_lettered, reclaimed

`publish_once` also sets the caller's dedupe key (its value: the entry id and the
payload's digest).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from services.kit import errors
from services.kit.streams import lua
from services.kit.streams.message import Message, as_text, current_traceparent, encode, now_ms

COUNTERS = ("processed", "retried", "deferred", "dead_lettered", "reclaimed")


@dataclass(frozen=True)
class StreamKeys:
    """The Redis keys of one queue, and its consumer group's name."""

    stream: str
    group: str
    delayed: str
    dead: str
    stats: str

    @classmethod
    def of(cls, name: str) -> StreamKeys:
        base = f"queue:{name}"
        return cls(base, name, f"{base}:delayed", f"{base}:dead", f"{base}:stats")


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of one queue.

    length: entries in the stream (ready or being handled); pending: read by a
    worker and not yet settled; delayed: waiting for a retry; dead: dead
    letters. The counters count since the queue was created: messages
    processed, failed attempts scheduled for retry, deferrals (waits that spent
    no attempt), messages dead-lettered, and messages taken over from a stopped
    consumer.
    """

    length: int
    pending: int
    delayed: int
    dead: int
    processed: int
    retried: int
    deferred: int
    dead_lettered: int
    reclaimed: int


class Queue:
    """Publishes to one named queue; workers and dead-letter admin build on it.

    The Redis client must return bytes (the default, not decode_responses):
    payloads are opaque bytes. A worker's client also needs a socket timeout
    longer than its blocking read (`WorkerConfig.block_ms`).
    """

    def __init__(
        self,
        redis: Redis,
        name: str,
        *,
        maxlen: int = 1_000_000,
        dedupe_ttl_s: int = 7 * 86400,
    ) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the queue needs a Redis client that returns bytes")
        if not name:
            raise ValueError("a queue needs a name")
        self.redis = redis
        self.name = name
        self.keys = StreamKeys.of(name)
        # Approximate trimming (MAXLEN ~) costs nothing per XADD; it only
        # bounds memory when consumers fall this far behind.
        self.maxlen = maxlen
        self.dedupe_ttl_s = dedupe_ttl_s
        self.scripts = lua.Scripts.register(redis)

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    async def publish(self, message: Message) -> str:
        """Append `message` to the stream; returns its entry id.

        ValueError when it has no id or tenant; RedisError when Redis fails.
        """
        entry_id = await self.redis.xadd(
            self.keys.stream, _stamped(message), maxlen=self.maxlen, approximate=True
        )
        return as_text(entry_id)

    async def publish_once(
        self, message: Message, dedupe_key: str, *, digest: str = ""
    ) -> tuple[str, bool]:
        """Append `message` unless `dedupe_key` was seen within the dedupe TTL.

        One round trip: (entry id, False) when appended, (the first entry's
        id, True) for a duplicate. With a `digest` (of the payload, no spaces)
        it is kept with the key, and a known key with another digest raises
        IdempotencyKeyReused, nothing appended. RedisError propagates: the
        caller must not acknowledge what it could not enqueue.
        """
        entry_id, seen = await self.scripts.publish_once(
            keys=[dedupe_key, self.keys.stream], args=self.once_args(message, digest)
        )
        return self.once_outcome(message, entry_id, seen)

    def once_args(self, message: Message, digest: str) -> list[Any]:
        """The publish-once script's ARGV for `message` (stamped now, in the caller's trace)."""
        if any(c.isspace() for c in digest):
            raise ValueError("a dedupe digest holds no whitespace")
        args: list[Any] = [self.dedupe_ttl_s, self.maxlen, digest]
        for name, value in _stamped(message).items():
            args += (name, value)
        return args

    def once_outcome(self, message: Message, entry_id: Any, seen: Any) -> tuple[str, bool]:
        """What the publish-once script's reply means: (entry id, duplicate) or a refusal."""
        if seen == 2:
            raise errors.IdempotencyKeyReused(
                f"{message.id} was already accepted with a different payload"
            )
        return as_text(entry_id), bool(seen)

    async def stats(self) -> QueueStats:
        """Lengths and counters in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.keys.stream)
        pipe.xpending(self.keys.stream, self.keys.group)
        pipe.zcard(self.keys.delayed)
        pipe.xlen(self.keys.dead)
        pipe.hgetall(self.keys.stats)
        length, pending, delayed, dead, counters = await pipe.execute(raise_on_error=False)
        if isinstance(pending, ResponseError) and str(pending).startswith("NOGROUP"):
            pending = {"pending": 0}  # no worker has started yet
        for reply in (length, pending, delayed, dead, counters):
            if isinstance(reply, Exception):
                raise reply
        count = {as_text(k): int(v) for k, v in counters.items()}
        return QueueStats(
            length=int(length),
            pending=int(pending["pending"]),
            delayed=int(delayed),
            dead=int(dead),
            **{name: count.get(name, 0) for name in COUNTERS},
        )


def _stamped(message: Message) -> dict[FieldT, EncodableT]:
    """The fields to store: trace context and enqueue time filled in when unset."""
    if not message.traceparent or not message.enqueued_at_ms:
        message = dataclasses.replace(
            message,
            traceparent=message.traceparent or current_traceparent(),
            enqueued_at_ms=message.enqueued_at_ms or now_ms(),
        )
    if not message.id or not message.tenant:
        raise ValueError("a message needs an id and a tenant")
    return stream_fields(encode(message))


def stream_fields(fields: Mapping[str, bytes]) -> dict[FieldT, EncodableT]:
    """`fields` typed as redis-py's XADD takes them."""
    return {name: value for name, value in fields.items()}
