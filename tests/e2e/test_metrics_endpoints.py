"""Every server and worker of the running platform serves its metrics: the session's
platform (started by the launcher, as `./shop up` starts it) records one endpoint per
process and replica, each answers `/metrics` in Prometheus text format with the kit's
series, the values move when a request passes through the edge, and `./shop status`
says where they are."""

from __future__ import annotations

import uuid

import httpx
import pytest

from services import topology
from services.launcher.platform import State
from tests.e2e.conftest import Api
from tests.integration.test_launcher_cli import launcher
from tests.scrapes import scrape, value

pytestmark = pytest.mark.e2e

SERVERS_AND_WORKERS = topology.of_kind(topology.Kind.SERVER, topology.Kind.WORKER)
# Declared in every process (services.kit.metrics), with samples or not.
EVERYWHERE = ("grpc_server_handled_total", "shop_queue_settled_total", "shop_upstream_calls_total")


def test_every_server_and_worker_records_one_metrics_endpoint_per_replica(
    platform: State,
) -> None:
    for process in SERVERS_AND_WORKERS:
        assert process.metrics_port is not None, process.name
        endpoints = platform.metrics.get(process.name, [])
        assert len(endpoints) == len(platform.targets[process.name]) >= 1, process.name
        assert len(set(endpoints)) == len(endpoints), process.name


@pytest.mark.parametrize("process", SERVERS_AND_WORKERS, ids=lambda p: p.name)
def test_each_process_answers_metrics_in_prometheus_text(
    platform: State, process: topology.Process
) -> None:
    for url in platform.metrics[process.name]:
        response = httpx.get(url, timeout=5)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        for name in EVERYWHERE:
            assert f"# TYPE {name} counter" in response.text, (url, name)
        # The process collector: each endpoint is the process itself, not a shared one.
        assert value(scrape(url), "process_start_time_seconds") > 0


def test_requests_through_the_edge_move_the_product_and_rate_limit_counters(
    platform: State,
) -> None:
    (url,) = platform.metrics["product"]
    labels = {
        "grpc_service": "shop.product.v1.ProductService",
        "grpc_method": "ListProducts",
        "grpc_type": "unary",
        "grpc_code": "OK",
    }
    before = value(scrape(url), "grpc_server_handled_total", labels)
    (limits,) = platform.metrics["ratelimit"]
    decided = value(scrape(limits), "shop_ratelimit_decisions_total")
    listed = httpx.get(
        f"{platform.rest_url}/v1/products", headers={"X-Tenant-Id": "demo"}, timeout=10
    )
    assert listed.status_code == 200, listed.text
    after = scrape(url)
    assert value(after, "grpc_server_handled_total", labels) == before + 1
    timing = {k: v for k, v in labels.items() if k != "grpc_code"}
    assert value(after, "grpc_server_handling_seconds_count", timing) >= 1
    # The gateway reads the ERP through the kit's upstream client.
    assert value(after, "shop_upstream_attempts_total", {"upstream": "erp"}) >= 1
    # Reads are limited inside Envoy: the rate-limit service is not asked about them.
    assert value(scrape(limits), "shop_ratelimit_decisions_total") == decided
    # A login attempt is counted by the rate-limit service.
    attempt = httpx.post(
        f"{platform.rest_url}/v1/auth/login",
        json={"email": "nobody@example.com", "password": "not the password 1"},
        headers={"X-Tenant-Id": "demo"},
        timeout=10,
    )
    assert attempt.status_code == 401, attempt.text
    assert value(scrape(limits), "shop_ratelimit_decisions_total") > decided


def test_envoy_serves_its_own_prometheus_stats(platform: State) -> None:
    stats = httpx.get(f"{platform.envoy_admin_url}/stats/prometheus", timeout=5)
    assert stats.status_code == 200
    assert "envoy_cluster_upstream_rq_total" in stats.text


def test_workers_report_their_queues_and_the_relay_its_lag(platform: State) -> None:
    for url in platform.metrics["event-worker"]:
        samples = scrape(url)
        depth = {labels for name, labels in samples if name == "shop_queue_depth_messages"}
        assert {dict(labels)["state"] for labels in depth} == {
            "stream",
            "pending",
            "delayed",
            "dead",
        }
    (relay,) = platform.metrics["relay"]
    assert value(scrape(relay), "shop_outbox_lag_seconds", {"route": "order"}) >= 0
    assert ("shop_outbox_lag_seconds", frozenset({("route", "order")})) in scrape(relay)


def test_status_says_where_the_metrics_are(platform: State) -> None:
    shown = launcher(platform.run_dir, "status")
    assert shown.returncode == 0, shown.stderr
    for process in SERVERS_AND_WORKERS:
        for url in platform.metrics[process.name]:
            assert url in shown.stdout, process.name


def test_an_idempotent_replay_and_the_pool_are_counted_by_the_order_service(
    platform: State, api: Api
) -> None:
    (url,) = platform.metrics["order"]
    before = value(scrape(url), "shop_idempotency_replays_total")
    key = uuid.uuid4().hex
    assert api.create(key).status_code == 201
    assert value(scrape(url), "shop_idempotency_replays_total") == before
    assert api.create(key).status_code == 200  # the stored response, replayed
    after = scrape(url)
    assert value(after, "shop_idempotency_replays_total") == before + 1
    # The service's engine holds its connections in the pool between requests.
    pooled = value(after, "shop_db_pool_connections", {"state": "idle"})
    assert pooled + value(after, "shop_db_pool_connections", {"state": "in_use"}) >= 1
