"""Every metric the platform exports, and the endpoint each process serves them on.

One catalogue: the kit's mechanisms (the interceptor, the upstream client, the
breaker, the cache, the queue kit, the outbox relay, the database pool) count
into the metrics defined here, so each name exists once and
docs/observability.md can list them all. RPC metrics use the gRPC ecosystem's
names (`grpc_server_*`, as go-grpc-prometheus and py-grpc-prometheus export
them); the platform's own are `shop_<area>_<what>_<unit>`. Labels are kept low
in cardinality: services, methods, upstreams, queues and outcomes, never a
tenant, user or message id.

`serve(bind)` starts the Prometheus text endpoint (`GET /metrics`) on the
process's event loop, so values read on scrape (queue lengths in Redis, the
database pool) are refreshed by the `on_scrape` callbacks right before the
registry is rendered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("shop.metrics")

# --- RPCs (services.kit.interceptors) ------------------------------------------------------

_RPC = ("grpc_service", "grpc_method", "grpc_type")
GRPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    (*_RPC, "grpc_code"),
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the RPC's start to its status, on the server.",
    _RPC,
)

# The same on the calling side (services.kit.grpc_client).
GRPC_CLIENT_STARTED = Counter(
    "grpc_client_started_total", "RPCs started by this process's clients.", _RPC
)
GRPC_CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "RPCs this process's clients saw completed, by status code.",
    (*_RPC, "grpc_code"),
)
GRPC_CLIENT_HANDLING = Histogram(
    "grpc_client_handling_seconds",
    "Time from the RPC's start to its status, on the client.",
    _RPC,
)

# --- upstream HTTP calls (services.kit.upstream, services.kit.breaker) ---------------------

UPSTREAM_CALLS = Counter(
    "shop_upstream_calls_total",
    "Calls to an upstream, by how they ended.",
    ("upstream", "outcome"),
)
UPSTREAM_ATTEMPTS = Counter(
    "shop_upstream_attempts_total",
    "HTTP attempts sent to an upstream (retries included).",
    ("upstream",),
)
UPSTREAM_RETRIES = Counter(
    "shop_upstream_retries_total", "Retries of a failed attempt.", ("upstream",)
)
UPSTREAM_BUDGET_REFUSALS = Counter(
    "shop_upstream_retry_budget_refusals_total",
    "Retries not made because the retry budget was spent.",
    ("upstream",),
)
UPSTREAM_DURATION = Histogram(
    "shop_upstream_call_duration_seconds",
    "A whole upstream call, retries included.",
    ("upstream",),
)
BREAKER_STATE = Gauge(
    "shop_breaker_state",
    "The circuit breaker's state: 1 for the state it is in, else 0.",
    ("upstream", "state"),
)
BREAKER_REJECTIONS = Counter(
    "shop_breaker_rejections_total", "Calls refused by an open circuit breaker.", ("upstream",)
)
BREAKER_TRANSITIONS = Counter(
    "shop_breaker_transitions_total", "Circuit breaker state changes.", ("upstream", "to")
)

# --- caches (services.kit.cache) and idempotency (services.kit.idempotency) ----------------

CACHE_LOOKUPS = Counter(
    "shop_cache_lookups_total",
    "Cache gets: hit (fresh), miss (loaded), stale (served after a failed load).",
    ("cache", "result"),
)
IDEMPOTENT_REPLAYS = Counter(
    "shop_idempotency_replays_total",
    "Requests answered from a stored idempotent response.",
    ("operation",),
)

# --- queues (services.kit.streams) ---------------------------------------------------------

QUEUE_SETTLED = Counter(
    "shop_queue_settled_total",
    "Messages settled by workers: processed, retried, deferred, dead_lettered.",
    ("queue", "outcome"),
)
QUEUE_RECLAIMED = Counter(
    "shop_queue_reclaimed_total", "Messages taken over from a stopped consumer.", ("queue",)
)
QUEUE_HANDLER = Histogram(
    "shop_queue_handler_duration_seconds",
    "One handler attempt, by its result.",
    ("queue", "result"),
)
QUEUE_DEPTH = Gauge(
    "shop_queue_depth_messages",
    "Messages in a queue by where they are: stream (not yet settled), "
    "pending (delivered, unacked), delayed (waiting to retry), dead.",
    ("queue", "state"),
)
OUTBOX_LAG = Gauge(
    "shop_outbox_lag_seconds",
    "Age of the oldest unpublished outbox row (0 when none).",
    ("route",),
)
OUTBOX_PUBLISHED = Counter(
    "shop_outbox_published_total", "Outbox rows published onto their stream.", ("route",)
)

# --- customer notifications (services.order.notifier) ------------------------------------

NOTIFICATIONS_SENT = Counter(
    "shop_notifications_sent_total",
    "Delivery attempts of customer notifications by channel and outcome "
    "(sent, retry: due again after a backoff, failed: given up).",
    ("channel", "outcome"),
)
NOTIFICATIONS_LAG = Gauge(
    "shop_notifications_lag_seconds",
    "Age of the oldest pending notification that is due (0 when none).",
)

# --- payments (services.order.pipeline) ----------------------------------------------------
PAYMENTS = Counter(
    "shop_payments_total",
    "Charge attempts reaching a status (pending, captured, declined, unknown, failed, refunded).",
    ("status",),
)

# --- database (services.kit.db) and rate limits (services.ratelimit) -----------------------

DB_POOL = Gauge(
    "shop_db_pool_connections",
    "SQLAlchemy pool connections by state (in_use, idle).",
    ("state",),
)
RATELIMIT_DECISIONS = Counter(
    "shop_ratelimit_decisions_total",
    "Rate-limit answers per descriptor, by the rule's "
    "policy (`unlimited` when none matched) and code (OK, OVER_LIMIT).",
    ("policy", "code"),
)


# --- the endpoint --------------------------------------------------------------------------

Refresh = Callable[[], Awaitable[None]]
_refreshers: set[Refresh] = set()


def on_scrape(refresh: Refresh) -> Callable[[], None]:
    """Run `refresh` before every scrape (it sets gauges); returns its removal."""
    _refreshers.add(refresh)
    return lambda: _refreshers.discard(refresh)


async def refresh() -> None:
    """Every `on_scrape` callback, each failure logged and skipped (a scrape still answers)."""
    for callback in list(_refreshers):
        try:
            await callback()
        except Exception:
            log.warning("a metrics refresh failed", exc_info=True)


async def _metrics(request: web.Request) -> web.Response:
    await refresh()
    # The text format Prometheus asks for (OpenMetrics when its Accept header says so).
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(REGISTRY), headers={"Content-Type": content_type})


@dataclass
class Endpoint:
    """A running metrics endpoint: its port, and how to stop it."""

    port: int
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(bind: str) -> Endpoint:
    """Serve `GET /metrics` on `bind` (host:port, port 0 for any free one)."""
    host, _, port = bind.rpartition(":")
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    bound = int(runner.addresses[0][1])
    log.info("metrics", extra={"metrics_port": bound})
    return Endpoint(bound, runner)
