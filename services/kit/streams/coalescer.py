"""Publish-once for many concurrent callers in one pipelined round trip.

`Queue.publish_once` costs each caller a Redis round trip and a pooled
connection of its own: a burst of deliveries queues for connections and pays
redis-py's per-call cost once per delivery. `PublishCoalescer` has the same
contract, but callers that arrive while a round trip is in flight wait for the
next one, which sends all of them as one pipeline (EVALSHA of the same
publish-once script per message) on one connection:

    publisher = PublishCoalescer(queue)
    entry_id, duplicate = await publisher.publish_once(message, dedupe_key, digest=digest)

Each caller's answer is its own script reply, so the guarantees are those of
`publish_once`: a caller returns only after Redis has its message (or knew its
key), the same key twice in one pipeline appends once (Redis runs the scripts
one after another), and another digest under a known key raises
IdempotencyKeyReused for that caller alone. When the round trip fails, every
caller in it gets an error (a RedisError), none an acknowledgement; a message
Redis ran before the failure is in the stream and its retry is a duplicate. A
caller that gives up (its task cancelled, e.g. at its deadline) before its
pipeline leaves is not sent at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import NoScriptError, RedisError

from services.kit.streams import lua
from services.kit.streams.message import Message
from services.kit.streams.queue import Queue


class OncePublisher(Protocol):
    """What publishes a message once per dedupe key: a `Queue` or a `PublishCoalescer`."""

    async def publish_once(
        self, message: Message, dedupe_key: str, *, digest: str = ""
    ) -> tuple[str, bool]: ...


@dataclass
class _Waiting:
    message: Message
    dedupe_key: str
    args: list[Any]
    answer: asyncio.Future[tuple[str, bool]] = field(repr=False)


class PublishCoalescer:
    """`publish_once` on one queue, concurrent calls batched into one pipeline.

    At most one pipeline is in flight, of at most `max_batch` messages; the
    rest wait for the next. Needs one connection of the client's pool.
    """

    def __init__(self, queue: Queue, *, max_batch: int = 512) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.queue = queue
        self._max_batch = max_batch
        self._sha = queue.scripts.publish_once.sha
        self._waiting: list[_Waiting] = []
        self._draining: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"PublishCoalescer({self.queue.name!r})"

    async def publish_once(
        self, message: Message, dedupe_key: str, *, digest: str = ""
    ) -> tuple[str, bool]:
        """As `Queue.publish_once`; the round trip shared with concurrent callers."""
        # Stamped here, in the caller's task: its own trace context and enqueue time.
        args = self.queue.once_args(message, digest)
        answer: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(message, dedupe_key, args, answer))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = [w for w in self._waiting[: self._max_batch] if not w.answer.done()]
                del self._waiting[: self._max_batch]
                if batch:
                    await self._send(batch)
        finally:
            self._draining = None
            # Only when this task was cancelled (shutdown): nobody is left waiting forever.
            for waiting in self._waiting:
                waiting.answer.cancel()
            self._waiting.clear()

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            replies = await self._round_trip(batch)
            for waiting, reply in zip(batch, replies, strict=True):
                if waiting.answer.done():
                    continue
                if isinstance(reply, Exception):
                    waiting.answer.set_exception(reply)
                    continue
                try:
                    entry_id, seen = reply
                    waiting.answer.set_result(
                        self.queue.once_outcome(waiting.message, entry_id, seen)
                    )
                except Exception as exc:  # IdempotencyKeyReused, or a reply of another shape
                    waiting.answer.set_exception(exc)
        except Exception as exc:
            for waiting in batch:
                if not waiting.answer.done():
                    # One exception object per caller: each raises it in its own task.
                    failed = RedisError(f"the batched publish failed: {exc}")
                    failed.__cause__ = exc
                    waiting.answer.set_exception(failed)
        finally:
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.cancel()

    async def _round_trip(self, batch: list[_Waiting]) -> list[Any]:
        replies = await self._pipeline(batch)
        # NOSCRIPT means that script did not run (Redis restarted or its scripts were
        # flushed): load it and send exactly those again.
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self.queue.redis.script_load(lua.PUBLISH_ONCE)
            again = await self._pipeline([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, batch: list[_Waiting]) -> list[Any]:
        stream = self.queue.keys.stream
        pipe = self.queue.redis.pipeline(transaction=False)
        for waiting in batch:
            pipe.evalsha(self._sha, 2, waiting.dedupe_key, stream, *waiting.args)
        async with pipe:
            return list(await pipe.execute(raise_on_error=False))
