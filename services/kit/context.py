"""Per-request context carried in contextvars: request id, tenant, method, deadline.

The observability interceptor sets them; log lines and outgoing calls read
them, so nothing has to be passed down by hand. It also sets `call`, the
current RPC's metadata read once, which the identity of the caller is taken
from (services.kit.identity.of) without scanning the metadata again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any


class Call:
    """The RPC being served: its servicer context, its text metadata as a mapping
    (the last value of a repeated key), and the caller once identity.of has read it."""

    __slots__ = ("ctx", "identity", "metadata")

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.metadata: dict[str, str] = {
            k: v for k, v in ctx.invocation_metadata() or () if isinstance(v, str)
        }
        self.identity: Any = None


request_id: ContextVar[str] = ContextVar("request_id", default="")
tenant_id: ContextVar[str] = ContextVar("tenant_id", default="")
# The acting user (the edge's verified `sub`, or an internal caller's x-user-id).
user_id: ContextVar[str] = ContextVar("user_id", default="")
method: ContextVar[str] = ContextVar("method", default="")
# When the caller's gRPC deadline expires, on the time.monotonic() clock;
# None when the caller set none. Outgoing calls never wait past it.
deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
call: ContextVar[Call | None] = ContextVar("call", default=None)


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
