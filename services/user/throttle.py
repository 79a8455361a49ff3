"""Failed-login counting in Redis, so a password cannot be guessed at speed.

Failures count against the ACCOUNT, whatever identifier named it (email or
username, in any spelling), and against the pair of that account and the
client address the edge saw. Two rules use the two counts:

    pair     `max_failures` failures of one account from one address within
             `window_s` block that pair until the window ends (429 with
             Retry-After, before any password is checked).
    account  past `max_failures` failures from all addresses together, every
             attempt on the account waits before its password is checked:
             SLOW_BASE_S, doubling with each further failure, at most
             `max_delay_s`. It is never refused.

So a guesser at one address gets `max_failures` tries per window, a guesser
spread over many addresses is slowed to one answer per `max_delay_s` per
connection (and the edge limits connections per address), and nobody can
lock a chosen victim out: from any other address the owner still gets in,
after at most `max_delay_s`. An identifier that names no account is counted
the same way (under its stored form), so throttling tells nothing about who
is registered. A success clears the account's count and its own address's
pair. Shared by every replica.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from services.kit import errors

SLOW_BASE_S = 0.25


class LoginThrottle:
    """Counts failed logins per account and per (account, client address) in a fixed window.

    A window starts at its first failure; later failures do not extend it.
    """

    def __init__(
        self, redis: Redis, max_failures: int, window_s: int, max_delay_s: float = 2.0
    ) -> None:
        if max_failures < 1 or window_s < 1 or max_delay_s < 0:
            raise ValueError("max_failures and window_s must be >= 1, max_delay_s >= 0")
        self._redis = redis
        self._max = max_failures
        self._window_s = window_s
        self._max_delay_s = max_delay_s

    @staticmethod
    def _key(kind: str, *parts: str) -> str:
        # Hashed: account ids, identifiers and addresses stay out of Redis.
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
        return f"login-failures:{kind}:{digest}"

    def keys(self, tenant: str, account: str, address: str) -> tuple[str, str]:
        """The (pair, account) counter keys."""
        return self._key("pair", tenant, account, address), self._key("account", tenant, account)

    def delay(self, account_failures: int) -> float:
        """Seconds an attempt on an account with this many failures waits."""
        beyond = account_failures - self._max
        if beyond < 0:
            return 0.0
        return min(self._max_delay_s, SLOW_BASE_S * 2.0 ** min(beyond, 16))

    async def admit(self, tenant: str, account: str, address: str) -> None:
        """Wait as long as the account's failures ask; RateLimited, naming the
        seconds left, when this address has failed on this account too often."""
        pair, whole = self.keys(tenant, account, address)
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(pair)
        pipe.ttl(pair)
        pipe.get(whole)
        count, ttl, account_count = await self._execute(pipe)
        if count is not None and int(count) >= self._max:
            retry_after = int(ttl) if int(ttl) > 0 else self._window_s
            raise errors.RateLimited(
                f"too many failed logins; try again in {retry_after} seconds",
                metadata={errors.RETRY_AFTER: str(retry_after)},
            )
        wait = self.delay(int(account_count or 0))
        if wait:
            await asyncio.sleep(wait)

    async def record_failure(self, tenant: str, account: str, address: str) -> int:
        """Count one failure; returns the pair's count in its current window."""
        pair, whole = self.keys(tenant, account, address)
        # SET NX EX then INCR in one MULTI round trip: a window starts at its
        # first failure and later ones do not extend it. (INCR + EXPIRE NX
        # would need Redis 7; the platform runs 6.2.)
        pipe = self._redis.pipeline(transaction=True)
        for key in (pair, whole):
            pipe.set(key, 0, ex=self._window_s, nx=True)
            pipe.incr(key)
        _, count, _, _ = await self._execute(pipe)
        return int(count)

    async def clear(self, tenant: str, account: str, address: str) -> None:
        """Forget the account's failures after a successful login."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(*self.keys(tenant, account, address))
        await self._execute(pipe)

    @staticmethod
    async def _execute(pipe: Pipeline) -> list[Any]:
        try:
            return await pipe.execute()
        except RedisError as exc:
            # Failing closed: without the counter, guessing would be unlimited.
            raise errors.Unavailable("login is unavailable (throttle store)") from exc
