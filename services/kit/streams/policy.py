"""What a worker does with a failure, and how it is sized: handlers, retry policy, config."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from services.kit.backoff import full_jitter
from services.kit.config import ConfigError, env_float, env_int
from services.kit.streams.message import Message

Handler = Callable[[Message], Awaitable[None]]
"""Processes one message. Returning acks it; `Permanent` dead-letters it now;
`Defer` puts it back for later without spending an attempt; any other
exception (or running past the handler timeout) is a failed attempt that is
retried later."""


class Permanent(Exception):
    """Raised by a handler: do not retry, dead-letter now."""


class Defer(Exception):
    """Raised by a handler: not now, and not this message's fault.

    The message waits `delay_s` plus a jitter of as long again (at least the
    retry base), so deferred messages do not return in step, and spends no
    attempt. For
    a dependency known to be down for everyone, e.g. an upstream whose circuit
    breaker is open: an outage then delays messages instead of draining their
    attempts into the dead letters. The queue's delayed count shows the backlog.
    """

    def __init__(self, delay_s: float, reason: str) -> None:
        super().__init__(reason)
        self.delay_s = max(delay_s, 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failed message is tried again.

    After `max_attempts` failed attempts the message goes to the dead stream.
    Before that, attempt n waits a full-jitter backoff: uniform in
    [0, min(cap_s, base_s * 2**(n-1))], so retries of many messages that
    failed together (an outage) spread out instead of returning in step.
    """

    max_attempts: int = 5
    base_s: float = 1.0
    cap_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_s < 0 or self.cap_s < 0:
            raise ConfigError("retry base_s and cap_s must not be negative")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after the `attempt`-th failed attempt (1 for the first)."""
        return full_jitter(rng, attempt - 1, base_s=self.base_s, cap_s=self.cap_s)


@dataclass(frozen=True)
class WorkerConfig:
    """Sizing and timing of one worker process.

    `consumer` names this process in the consumer group and must be unique
    (hostname-pid). `concurrency` handlers run at most at once. A message
    whose consumer has not acked it for `visibility_timeout_s` is taken over
    by another worker; `handler_timeout_s` must be shorter, so that a live
    worker always settles a message before anyone may take it over. The
    handler's middleware chain as a whole gets until halfway between the two.
    """

    consumer: str
    concurrency: int = 32
    visibility_timeout_s: float = 30.0
    handler_timeout_s: float = 20.0
    block_ms: int = 1000
    scheduler_interval_s: float = 0.2
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not self.consumer:
            raise ConfigError("a worker needs a consumer name (unique per process)")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.handler_timeout_s <= 0:
            raise ConfigError(f"handler_timeout_s must be positive, got {self.handler_timeout_s}")
        if self.handler_timeout_s >= self.visibility_timeout_s:
            raise ConfigError(
                f"handler_timeout_s ({self.handler_timeout_s}) must be shorter than "
                f"visibility_timeout_s ({self.visibility_timeout_s}), or a slow handler's "
                "message is taken over by another worker while it still runs"
            )
        # BLOCK 0 means "wait forever" to Redis: the worker would never notice `stop`.
        if self.block_ms < 1:
            raise ConfigError(f"block_ms must be at least 1, got {self.block_ms}")
        if self.scheduler_interval_s <= 0:
            raise ConfigError("scheduler_interval_s must be positive")

    @classmethod
    def from_env(cls, prefix: str, env: Mapping[str, str], consumer: str) -> WorkerConfig:
        """Read `<PREFIX>_CONCURRENCY`, `_VISIBILITY_TIMEOUT_S`, `_HANDLER_TIMEOUT_S`,
        `_MAX_ATTEMPTS`, `_RETRY_BASE_S`, `_RETRY_CAP_S` over the defaults."""
        # Dataclass defaults are class attributes; the consumer is validated on construction.
        d, r = cls, RetryPolicy()
        return cls(
            consumer=consumer,
            concurrency=env_int(env, f"{prefix}_CONCURRENCY", d.concurrency),
            visibility_timeout_s=env_float(
                env, f"{prefix}_VISIBILITY_TIMEOUT_S", d.visibility_timeout_s
            ),
            handler_timeout_s=env_float(env, f"{prefix}_HANDLER_TIMEOUT_S", d.handler_timeout_s),
            retry=RetryPolicy(
                max_attempts=env_int(env, f"{prefix}_MAX_ATTEMPTS", r.max_attempts),
                base_s=env_float(env, f"{prefix}_RETRY_BASE_S", r.base_s),
                cap_s=env_float(env, f"{prefix}_RETRY_CAP_S", r.cap_s),
            ),
        )
