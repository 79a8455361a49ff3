"""The Grafana dashboard of the platform: one row per area, every query over a series the
metrics catalogue (services/kit/metrics.py) or Envoy's `/stats/prometheus` exports.

The data source is the `DS_PROMETHEUS` variable, so the same JSON is imported through
the UI or provisioned from a file. Rates use `$__rate_interval`, which Grafana sizes
from the scrape interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UID = "shop-platform"
TITLE = "Shop platform"
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
WIDTH = 24  # Grafana's grid
PANEL_HEIGHT = 8
RATE = "[$__rate_interval]"
# The codes the alert rules count as the server's failures (see docs/observability.md).
SERVER_ERRORS = "UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS|DEADLINE_EXCEEDED|UNIMPLEMENTED"
Doc = dict[str, Any]


@dataclass(frozen=True)
class Panel:
    """One time series panel: its queries as (PromQL, legend) and its unit."""

    title: str
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    description: str = ""


def rate(metric: str, matchers: str = "") -> str:
    selector = f"{metric}{{{matchers}}}" if matchers else metric
    return f"rate({selector}{RATE})"


def sum_by(labels: str, expr: str) -> str:
    return f"sum by ({labels}) ({expr})"


def p99(bucket: str, by: str, matchers: str = "") -> str:
    return f"histogram_quantile(0.99, {sum_by('le, ' + by, rate(bucket, matchers))})"


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("RPCs (every server)", (
        Panel("Requests per second by service and method", ((
            sum_by("grpc_service, grpc_method", rate("grpc_server_handled_total")),
            "{{grpc_service}}/{{grpc_method}}"),), "reqps"),
        Panel("Non-OK responses by service and code", ((
            sum_by("grpc_service, grpc_code", rate("grpc_server_handled_total", 'grpc_code!="OK"')),
            "{{grpc_service}} {{grpc_code}}"),), "reqps"),
        Panel("Server-error ratio by service", ((
            sum_by("grpc_service", rate("grpc_server_handled_total", f'grpc_code=~"{SERVER_ERRORS}"'))
            + " / " + sum_by("grpc_service", rate("grpc_server_handled_total")),
            "{{grpc_service}}"),), "percentunit",
            "The codes that mean the server failed, not the caller (the ShopRPCErrorRatioHigh alert)."),
        Panel("p99 latency by service and method", ((
            p99("grpc_server_handling_seconds_bucket", "grpc_service, grpc_method", 'grpc_type="unary"'),
            "{{grpc_service}}/{{grpc_method}}"),), "s"),
        Panel("RPCs in flight by service", ((
            sum_by("grpc_service", "grpc_server_started_total")
            + " - " + sum_by("grpc_service", "grpc_server_handled_total"),
            "{{grpc_service}}"),), "short",
            "Started minus handled: RPCs a server is working on now."),
        Panel("Service-to-service calls by callee method and code", ((
            sum_by("grpc_service, grpc_method, grpc_code", rate("grpc_client_handled_total")),
            "{{grpc_service}}/{{grpc_method}} {{grpc_code}}"),), "reqps",
            "What the order service and the pipeline ask the catalogue and the inventory."),
        Panel("Service-to-service p99 and calls started", (
            (p99("grpc_client_handling_seconds_bucket", "grpc_service, grpc_method"),
             "p99 {{grpc_service}}/{{grpc_method}}"),
            (sum_by("grpc_service", rate("grpc_client_started_total")), "started {{grpc_service}}"),
        ), "s"),
    )),
    ("Upstreams (ERP, Warehouse, Routing)", (
        Panel("Calls by upstream and outcome", ((
            sum_by("upstream, outcome", rate("shop_upstream_calls_total")),
            "{{upstream}} {{outcome}}"),), "reqps"),
        Panel("Attempts, retries and retry-budget refusals", (
            (sum_by("upstream", rate("shop_upstream_attempts_total")), "{{upstream}} attempts"),
            (sum_by("upstream", rate("shop_upstream_retries_total")), "{{upstream}} retries"),
            (sum_by("upstream", rate("shop_upstream_retry_budget_refusals_total")),
             "{{upstream}} refused by the budget"),
        ), "reqps"),
        Panel("Breaker open (1) per process and upstream", ((
            'max by (job, upstream) (shop_breaker_state{state="open"})',
            "{{job}} {{upstream}}"),), "short",
            "Each replica has its own breaker: one open breaker is one replica failing fast."),
        Panel("Breaker rejections and transitions, p99 call duration", (
            (sum_by("upstream", rate("shop_breaker_rejections_total")), "{{upstream}} rejected"),
            (sum_by("upstream, to", rate("shop_breaker_transitions_total")), "{{upstream}} to {{to}}"),
            (p99("shop_upstream_call_duration_seconds_bucket", "upstream"), "{{upstream}} p99 (s)"),
        ), "short"),
    )),
    ("Caches and idempotency", (
        Panel("Cache hit ratio", ((
            sum_by("cache", rate("shop_cache_lookups_total", 'result="hit"'))
            + " / " + sum_by("cache", rate("shop_cache_lookups_total")),
            "{{cache}}"),), "percentunit"),
        Panel("Cache lookups by result", ((
            sum_by("cache, result", rate("shop_cache_lookups_total")),
            "{{cache}} {{result}}"),), "ops",
            "`stale`: served after a failed load (the upstream is down)."),
        Panel("Idempotent replays", ((
            sum_by("operation", rate("shop_idempotency_replays_total")),
            "{{operation}}"),), "reqps"),
    )),
    ("Queues (queue-kit workers)", (
        Panel("Depth by queue and state", ((
            "max by (queue, state) (shop_queue_depth_messages)",
            "{{queue}} {{state}}"),), "short",
            "Read from Redis by every worker replica: the same queue, so the max, not the sum."),
        Panel("Settled by outcome", ((
            sum_by("queue, outcome", rate("shop_queue_settled_total")),
            "{{queue}} {{outcome}}"),), "ops"),
        Panel("Handler p99 by result", ((
            p99("shop_queue_handler_duration_seconds_bucket", "queue, result"),
            "{{queue}} {{result}}"),), "s"),
        Panel("Reclaimed from stopped consumers", ((
            sum_by("queue", rate("shop_queue_reclaimed_total")), "{{queue}}"),), "ops"),
    )),
    ("Outbox", (
        Panel("Outbox lag (oldest unpublished row)", ((
            "max by (route) (shop_outbox_lag_seconds)", "{{route}}"),), "s"),
        Panel("Published rows", ((
            sum_by("route", rate("shop_outbox_published_total")), "{{route}}"),), "ops"),
    )),
    ("Notifications (notifier)", (
        Panel("Notification lag (oldest due, unsent)", ((
            "max(shop_notifications_lag_seconds)", "lag"),), "s",
            "Read from PostgreSQL by every notifier replica: the same rows, so the max."),
        Panel("Delivery attempts by channel and outcome", ((
            sum_by("channel, outcome", rate("shop_notifications_sent_total")),
            "{{channel}} {{outcome}}"),), "ops"),
    )),
    ("Payments (order pipeline)", (
        Panel("Payment status changes", ((
            sum_by("status", rate("shop_payments_total")), "{{status}}"),), "ops",
            "`unknown`: the provider's answer was lost; the reconciler settles it by its key."),
    )),
    ("Database pool", (
        Panel("Pool connections by process and state", ((
            "sum by (job, state) (shop_db_pool_connections)", "{{job}} {{state}}"),), "short"),
    )),
    ("Rate limits", (
        Panel("Global rate-limit decisions", ((
            sum_by("policy, code", rate("shop_ratelimit_decisions_total")),
            "{{policy}} {{code}}"),), "ops"),
        Panel("Envoy local rate limits: requests limited", ((
            sum_by("envoy_local_http_ratelimit_prefix", rate("envoy_http_local_rate_limit_rate_limited")),
            "{{envoy_local_http_ratelimit_prefix}}"),), "reqps"),
    )),
    ("Envoy (the edge)", (
        Panel("Downstream requests by response class", ((
            sum_by("envoy_response_code_class",
                   rate("envoy_http_downstream_rq_xx", 'envoy_http_conn_manager_prefix="edge"')),
            "{{envoy_response_code_class}}xx"),), "reqps"),
        Panel("Downstream p99", ((
            p99("envoy_http_downstream_rq_time_bucket", "envoy_http_conn_manager_prefix",
                'envoy_http_conn_manager_prefix="edge"'),
            "p99"),), "ms"),
        Panel("Upstream requests by cluster", ((
            sum_by("envoy_cluster_name", rate("envoy_cluster_upstream_rq_total")),
            "{{envoy_cluster_name}}"),), "reqps"),
        Panel("Upstream 5xx and retries by cluster", (
            (sum_by("envoy_cluster_name",
                    rate("envoy_cluster_upstream_rq_xx", 'envoy_response_code_class="5"')),
             "{{envoy_cluster_name}} 5xx"),
            (sum_by("envoy_cluster_name", rate("envoy_cluster_upstream_rq_retry")),
             "{{envoy_cluster_name}} retries"),
        ), "reqps"),
        Panel("Healthy hosts by cluster", ((
            "sum by (envoy_cluster_name) (envoy_cluster_membership_healthy)",
            "{{envoy_cluster_name}}"),), "short"),
    )),
)  # fmt: skip


def panel(item: Panel, panel_id: int, x: int, y: int, width: int) -> Doc:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": item.title,
        "description": item.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": PANEL_HEIGHT, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": item.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
             "legendFormat": legend}
            for i, (expr, legend) in enumerate(item.queries)
        ],
    }  # fmt: skip


def panels() -> list[Doc]:
    """A row header per area, then its panels side by side (at most four to a line, lines even)."""
    out: list[Doc] = []
    y = 0
    for title, items in ROWS:
        out.append({
            "id": len(out) + 1, "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}, "panels": [],
        })  # fmt: skip
        y += 1
        lines = -(-len(items) // 4)
        per_line = -(-len(items) // lines)
        width = WIDTH // per_line
        for i, item in enumerate(items):
            x = (i % per_line) * width
            out.append(panel(item, len(out) + 1, x, y + (i // per_line) * PANEL_HEIGHT, width))
        y += lines * PANEL_HEIGHT
    return out


def dashboard() -> Doc:
    variable = {"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                "query": "prometheus", "current": {}, "hide": 0}  # fmt: skip
    return {
        "uid": UID,
        "title": TITLE,
        "tags": ["shop"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "timezone": "utc",
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [variable]},
        "annotations": {"list": []},
        "panels": panels(),
    }
