"""Per-request context carried in contextvars: request id, tenant, method.

The observability interceptor sets them; log lines and outgoing calls read
them, so nothing has to be passed down by hand.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("request_id", default="")
tenant_id: ContextVar[str] = ContextVar("tenant_id", default="")
method: ContextVar[str] = ContextVar("method", default="")
