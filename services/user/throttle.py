"""Failed-login counting in Redis, so a password cannot be guessed at speed."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from services.kit import errors


class LoginThrottle:
    """Counts failed logins per (tenant, identifier) in a fixed window.

    The window starts at the first failure; once `max_failures` are counted,
    logins for that identifier are refused (before any password is checked)
    until the window ends. A success clears the count. Shared by every
    replica, so the limit holds however many there are.
    """

    def __init__(self, redis: Redis, max_failures: int, window_s: int) -> None:
        if max_failures < 1 or window_s < 1:
            raise ValueError("max_failures and window_s must be >= 1")
        self._redis = redis
        self._max = max_failures
        self._window_s = window_s

    @staticmethod
    def key(tenant: str, identifier: str) -> str:
        """The counter's key; the identifier (an email) is hashed to keep it out of Redis."""
        digest = hashlib.sha256(f"{tenant}\0{identifier}".encode()).hexdigest()[:32]
        return f"login-failures:{digest}"

    async def check(self, tenant: str, identifier: str) -> None:
        """RateLimited, naming the seconds left, when the identifier has failed too often."""
        key = self.key(tenant, identifier)
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.ttl(key)
        count, ttl = await self._execute(pipe)
        if count is not None and int(count) >= self._max:
            retry_after = int(ttl) if int(ttl) > 0 else self._window_s
            raise errors.RateLimited(
                f"too many failed logins; try again in {retry_after} seconds",
                metadata={"retry-after": str(retry_after)},
            )

    async def record_failure(self, tenant: str, identifier: str) -> int:
        """Count one failure; returns the count in the current window."""
        key = self.key(tenant, identifier)
        # SET NX EX then INCR in one MULTI round trip: the window starts at the
        # first failure and later ones do not extend it. (INCR + EXPIRE NX would
        # need Redis 7; the platform runs 6.2.)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(key, 0, ex=self._window_s, nx=True)
        pipe.incr(key)
        _, count = await self._execute(pipe)
        return int(count)

    async def clear(self, tenant: str, identifier: str) -> None:
        """Forget the failures after a successful login."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(self.key(tenant, identifier))
        await self._execute(pipe)

    @staticmethod
    async def _execute(pipe: Pipeline) -> list[Any]:
        try:
            return await pipe.execute()
        except RedisError as exc:
            # Failing closed: without the counter, guessing would be unlimited.
            raise errors.Unavailable("login is unavailable (throttle store)") from exc
