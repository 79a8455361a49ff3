"""One delivery: run the handler inside its middleware, then settle it by the outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Mapping, Sequence

from redis.exceptions import RedisError

from services.kit.streams import outcomes
from services.kit.streams.message import (
    Fields,
    MalformedMessage,
    Message,
    decode,
    decode_lenient,
    now_ms,
)
from services.kit.streams.middleware import HandlerTimeout, Middleware, chain, describe_failure
from services.kit.streams.policy import Defer, Handler, Permanent, WorkerConfig
from services.kit.streams.queue import Queue

log = logging.getLogger("shop.queue")


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why an attempt failed, and whether retrying could help."""

    error: str
    permanent: bool = False
    # Set when the handler deferred the message: wait this long, spend no attempt.
    defer_s: float | None = None


class Processor:
    """Runs the handler, inside its middleware, on one delivery and settles it by what the
    handler did: ack, retry later, or dead letter."""

    def __init__(
        self,
        queue: Queue,
        handler: Handler,
        config: WorkerConfig,
        rng: random.Random,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self._queue = queue
        self._handler = handler
        self._config = config
        self._rng = rng
        self._middleware = tuple(middleware)
        # Halfway to the visibility timeout: a hanging middleware still lets this
        # worker settle the message before another may take it over.
        self._chain_timeout_s = (config.handler_timeout_s + config.visibility_timeout_s) / 2

    async def process(self, entry_id: str, fields: Fields | None) -> None:
        """Handle and settle one delivery; raises nothing but cancellation.

        When the outcome cannot be written (Redis is down), the message stays
        pending under this consumer and another worker reclaims it after the
        visibility timeout: at-least-once, never lost.
        """
        try:
            try:
                message = decode(entry_id, fields)
            except MalformedMessage as exc:
                await self._dead_letter_malformed(entry_id, fields or {}, str(exc))
                return
            failure = await self._attempt(message)
            if failure is None:
                await outcomes.ack(self._queue, entry_id)
            else:
                await self._failed(message, failure)
        except (RedisError, OSError) as exc:
            log.warning(
                "could not settle a message; it stays pending until reclaimed",
                extra={"queue": self._queue.name, "entry_id": entry_id, "error": str(exc)},
            )
        except Exception:
            log.exception(
                "settling a message failed",
                extra={"queue": self._queue.name, "entry_id": entry_id},
            )

    async def poison(self, entry_id: str, fields: Fields, deliveries: int) -> None:
        """Dead-letter a reclaimed message whose every consumer stopped while handling it."""
        error = f"reclaimed after {deliveries} deliveries: its consumers stopped"
        try:
            try:
                message = decode(entry_id, fields)
            except MalformedMessage as exc:
                await self._dead_letter_malformed(entry_id, fields, str(exc))
                return
            # Every delivery but this one was an attempt that never reported back.
            attempts = message.attempt + deliveries - 1
            await outcomes.dead_letter(
                self._queue,
                entry_id,
                outcomes.dead_fields(message, error, attempts),
                error,
                attempts,
            )
            self._log_dead(message, attempts, error, "poison")
        except (RedisError, OSError) as exc:
            log.warning(
                "could not dead-letter a poison message",
                extra={"queue": self._queue.name, "entry_id": entry_id, "error": str(exc)},
            )

    async def _attempt(self, message: Message) -> Failure | None:
        """Run the middleware chain and the handler once; None when both succeeded."""
        handler = _Watched(self._handler, self._config.handler_timeout_s)
        try:
            async with asyncio.timeout(self._chain_timeout_s) as bound:
                await chain(handler, self._middleware)(message)
        except Exception as exc:
            error: Exception = exc
            if isinstance(exc, TimeoutError) and bound.expired():
                error = HandlerTimeout(
                    f"the handler and its middleware ran longer than {self._chain_timeout_s:g}s"
                )
            # What the handler raised wins over what a middleware made of it.
            return _failure(error if handler.error is None else handler.error)
        return None if handler.error is None else _failure(handler.error)

    async def _failed(self, message: Message, failure: Failure) -> None:
        retry = self._config.retry
        if failure.defer_s is not None:
            # Spread over a window as long as the wait itself: messages deferred together
            # (a whole backlog when a breaker opens) must not come back in step.
            delay_s = failure.defer_s + self._rng.uniform(0, max(retry.base_s, failure.defer_s))
            await self._retry_later(message, message.attempt, failure.error, delay_s, "deferred")
            return
        attempt = message.attempt + 1
        if failure.permanent or attempt >= retry.max_attempts:
            await outcomes.dead_letter(
                self._queue,
                message.entry_id,
                outcomes.dead_fields(message, failure.error, attempt),
                failure.error,
                attempt,
            )
            reason = "permanent" if failure.permanent else "attempts exhausted"
            self._log_dead(message, attempt, failure.error, reason)
            return
        await self._retry_later(message, attempt, failure.error, retry.delay(attempt, self._rng))

    async def _retry_later(
        self, message: Message, attempt: int, error: str, delay_s: float, why: str = "retried"
    ) -> None:
        failed = dataclasses.replace(message, attempt=attempt, last_error=error)
        due_ms = now_ms() + round(delay_s * 1000)
        await outcomes.retry_later(self._queue, failed, due_ms, counter=why)
        log.info(
            "message deferred" if why == "deferred" else "message retry scheduled",
            extra={
                "queue": self._queue.name,
                "message_id": message.id,
                "tenant": message.tenant,
                "attempt": attempt,
                "error": error,
                "delay_ms": round(delay_s * 1000, 1),
            },
        )

    async def _dead_letter_malformed(
        self, entry_id: str, fields: Mapping[bytes, bytes], error: str
    ) -> None:
        stored = {key.decode(errors="replace"): value for key, value in fields.items()}
        await outcomes.dead_letter(self._queue, entry_id, stored, f"malformed: {error}", 0)
        shown = decode_lenient(entry_id, fields)
        self._log_dead(shown, 0, f"malformed: {error}", "malformed")

    def _log_dead(self, message: Message, attempts: int, error: str, reason: str) -> None:
        log.error(
            "message dead-lettered",
            extra={
                "queue": self._queue.name,
                "message_id": message.id,
                "tenant": message.tenant,
                "entry_id": message.entry_id,
                "attempt": attempts,
                "error": error,
                "reason": reason,
            },
        )


class _Watched:
    """The handler under its timeout, remembering how its last call ended.

    The processor settles by this record, so a middleware sees the outcome but
    cannot turn a failure into a success or one kind of failure into another.
    """

    def __init__(self, handler: Handler, timeout_s: float) -> None:
        self._handler = handler
        self._timeout_s = timeout_s
        self.error: Exception | None = None

    async def __call__(self, message: Message) -> None:
        self.error = None
        try:
            async with asyncio.timeout(self._timeout_s) as deadline:
                await self._handler(message)
        except TimeoutError as exc:
            if not deadline.expired():
                self.error = exc
                raise
            self.error = HandlerTimeout(f"the handler ran longer than {self._timeout_s:g}s")
            raise self.error from None
        except Exception as exc:
            self.error = exc
            raise


def _failure(exc: Exception) -> Failure:
    """How a failed attempt is settled: dead-lettered now, deferred, or retried."""
    if isinstance(exc, Permanent):
        return Failure(describe_failure(exc), permanent=True)
    if isinstance(exc, Defer):
        return Failure(describe_failure(exc), defer_s=exc.delay_s)
    return Failure(describe_failure(exc))
