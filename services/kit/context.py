"""Per-request context carried in contextvars: request id, tenant, method, deadline.

The observability interceptor sets them; log lines and outgoing calls read
them, so nothing has to be passed down by hand.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("request_id", default="")
tenant_id: ContextVar[str] = ContextVar("tenant_id", default="")
# The acting user (the edge's verified `sub`, or an internal caller's x-user-id).
user_id: ContextVar[str] = ContextVar("user_id", default="")
method: ContextVar[str] = ContextVar("method", default="")
# When the caller's gRPC deadline expires, on the time.monotonic() clock;
# None when the caller set none. Outgoing calls never wait past it.
deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


@contextmanager
def budget(seconds: float) -> Iterator[float]:
    """Cap the deadline of the calls inside at `seconds` from now (a caller's
    earlier deadline still wins); yields the deadline in force."""
    caller = deadline.get()
    mine = time.monotonic() + seconds
    effective = mine if caller is None else min(caller, mine)
    token = deadline.set(effective)
    try:
        yield effective
    finally:
        deadline.reset(token)
