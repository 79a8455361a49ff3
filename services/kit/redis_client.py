"""The one way a process builds its Redis client from a REDIS_URL.

Every option is a choice a service makes about failure, so each is explicit:
a socket timeout turns a hung Redis into a quick error instead of a hung
request; a blocking pool makes a burst wait for one of a bounded set of
connections instead of failing when all are busy; and `retries=False` turns
off redis-py's own retries for callers whose caller gives up first (Envoy's
rate-limit check fails open instead).

While the process exports spans, every command (and pipeline) is a CLIENT span
(OpenTelemetry's Redis instrumentation: the command name, its arguments as `?`).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.kit import tracing


def create_redis(
    url: str,
    *,
    timeout_s: float | None = None,
    connect_timeout_s: float | None = None,
    max_connections: int | None = None,
    blocking: bool = False,
    retries: bool = True,
) -> Redis:
    """A client of `url` (credentials and database in the URL).

    `timeout_s` bounds every socket operation and, with `blocking`, the wait
    for a free connection; `connect_timeout_s` defaults to it. Unset options
    keep redis-py's defaults.
    """
    options: dict[str, Any] = {}
    if timeout_s is not None:
        options["socket_timeout"] = timeout_s
    connect_timeout_s = timeout_s if connect_timeout_s is None else connect_timeout_s
    if connect_timeout_s is not None:
        options["socket_connect_timeout"] = connect_timeout_s
    if max_connections is not None:
        options["max_connections"] = max_connections
    if not retries:
        options["retry"] = Retry(NoBackoff(), 0)
    if blocking:
        pool = BlockingConnectionPool.from_url(url, timeout=timeout_s, **options)
        # from_pool: the client owns the pool, so closing the client closes its connections.
        client = Redis.from_pool(pool)
    else:
        client = Redis.from_url(url, **options)
    if tracing.exporting():
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor.instrument_client(client)
    return client
