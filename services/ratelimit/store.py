"""Fixed-window hit counters in Redis, one round trip per request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.kit import errors
from services.ratelimit.rules import Descriptor


@dataclass(frozen=True)
class Bucket:
    """One descriptor's counter for one window."""

    descriptor: Descriptor
    window_start: int
    window_s: int


class Counters(Protocol):
    """Adds hits to buckets and returns their new totals, in order."""

    async def add(self, domain: str, buckets: Sequence[Bucket], hits: int) -> list[int]: ...


def _escape(text: str) -> str:
    # Percent-encoding every delimiter (and '%' itself) keeps keys unambiguous
    # for any value (IPv6 addresses, user ids) while staying readable in redis-cli.
    return quote(text, safe="")


def bucket_key(domain: str, bucket: Bucket) -> str:
    """`rl:{domain}:{k1}={v1}|{k2}={v2}:{window_start}`, every part escaped."""
    entries = "|".join(f"{_escape(k)}={_escape(v)}" for k, v in bucket.descriptor)
    return f"rl:{_escape(domain)}:{entries}:{bucket.window_start}"


class RedisCounters:
    """Counters on one Redis: INCRBY + EXPIRE per bucket, pipelined without MULTI."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    async def add(self, domain: str, buckets: Sequence[Bucket], hits: int) -> list[int]:
        """New totals of the buckets; Unavailable when Redis cannot be reached."""
        # No MULTI: each INCRBY is atomic on its own, and the pipeline keeps each
        # EXPIRE right behind its INCRBY on one connection.
        pipe = self._client.pipeline(transaction=False)
        for bucket in buckets:
            key = bucket_key(domain, bucket)
            pipe.incrby(key, hits)
            # The window ends within window_s of now; the extra second absorbs
            # clock skew between replicas sharing the key.
            pipe.expire(key, bucket.window_s + 1)
        try:
            replies = await pipe.execute()
        except RedisError as exc:
            raise errors.Unavailable("rate-limit counters are unavailable") from exc
        return [int(count) for count in replies[0::2]]
