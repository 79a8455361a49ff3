"""Waiting: full-jitter exponential backoff (the one formula every retry in the
platform waits by), and a pause that a stop signal cuts short.

Waiting a uniform time in [0, min(cap, base * 2**retry)] spreads out the
retries of many callers that failed together (an outage), so they do not
return in step and knock the recovering dependency over again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

# 2**62 already dwarfs any cap; capping the exponent keeps huge retry counts
# from overflowing a float.
MAX_EXPONENT = 62


def full_jitter(rng: random.Random, retry: int, *, base_s: float, cap_s: float) -> float:
    """Seconds to wait before retry number `retry` (0 for the first retry)."""
    exponent = min(max(retry, 0), MAX_EXPONENT)
    return rng.uniform(0, min(cap_s, base_s * 2**exponent))


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile (a worker's idle wait)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
