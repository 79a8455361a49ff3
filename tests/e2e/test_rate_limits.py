"""Rate limits at the edge: shared across Envoy replicas, per user, and local per route.

Two Envoys of this module share one rate-limit service (on the platform's
Redis) with a small per-user limit: a user's budget is one budget whichever
replica serves them, another user's budget is untouched, and the 429 is the
platform's JSON error with Retry-After and RateLimit headers. Login has a
tight token bucket in each Envoy. With the rate-limit service down, traffic
passes (fail open).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from itertools import cycle
from pathlib import Path

import grpc
import httpx
import pytest
from shop.order.v1 import order_pb2, order_pb2_grpc

from services.launcher.edge_routes import EdgeLimits
from services.launcher.platform import State
from tests import identity
from tests.e2e.conftest import assert_error
from tests.edges import Edge, running_edge, running_service

pytestmark = pytest.mark.e2e

PER_USER = 10  # per hour: no window boundary falls inside a test run in practice


@pytest.fixture(scope="module")
def run_dir(platform: State) -> Path:
    return Path(platform.run_dir) / "rate-limits"


@pytest.fixture(scope="module")
def ratelimit(platform: State, run_dir: Path) -> Iterator[str]:
    env = {
        "REDIS_URL": platform.redis_url,
        "RATELIMIT_RULES": f"user={PER_USER}/hour; remote_address=10000/second",
    }
    with running_service("ratelimit", run_dir, env, platform) as target:
        yield target


@pytest.fixture(scope="module")
def edges(platform: State, run_dir: Path, ratelimit: str) -> Iterator[tuple[Edge, Edge]]:
    limits = EdgeLimits(route_rps=1000, credentials_rps=1)
    with (
        running_edge(platform, run_dir / "edge-a", limits=limits, ratelimit=ratelimit) as a,
        running_edge(platform, run_dir / "edge-b", limits=limits, ratelimit=ratelimit) as b,
    ):
        yield a, b


def _away_from_the_hour() -> None:
    """Skip past an hour boundary that would fall inside the next few seconds."""
    left = 3600 - time.time() % 3600
    if left < 10:
        time.sleep(left + 0.5)


def test_a_users_limit_holds_across_two_envoys_and_spares_other_users(
    http: httpx.Client, tenant: str, edges: tuple[Edge, Edge]
) -> None:
    alice, bob = identity.customer(http, tenant), identity.customer(http, tenant)
    clients = [httpx.Client(base_url=e.rest_url, timeout=10) for e in edges]
    _away_from_the_hour()
    try:
        answers = [
            client.get("/v1/orders", headers=alice.headers())
            for client, _ in zip(cycle(clients), range(PER_USER + 4), strict=False)
        ]
        assert [a.status_code for a in answers] == [200] * PER_USER + [429] * 4
        served = answers[PER_USER - 1]
        assert served.headers["ratelimit-policy"] == f'"user";q={PER_USER};w=3600'
        assert served.headers["ratelimit"].startswith('"user";r=0;t=')

        refused = answers[-1]
        assert_error(refused, 429, "rate_limited")
        assert 0 < int(refused.headers["retry-after"]) <= 3600
        assert refused.headers["ratelimit"].startswith('"user";r=0;')
        # Both replicas refuse: the budget is shared, not per Envoy.
        for client in clients:
            assert client.get("/v1/orders", headers=alice.headers()).status_code == 429
            assert client.get("/v1/orders", headers=bob.headers()).status_code == 200
    finally:
        for client in clients:
            client.close()


def test_the_rate_limited_answer_reaches_native_grpc_callers_as_resource_exhausted(
    http: httpx.Client, tenant: str, edges: tuple[Edge, Edge]
) -> None:
    carol = identity.customer(http, tenant)
    _away_from_the_hour()
    with grpc.insecure_channel(edges[0].grpc_target) as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        metadata = [("authorization", f"Bearer {carol.token}")]
        for _ in range(PER_USER):
            orders.ListOrders(order_pb2.ListOrdersRequest(), metadata=metadata, timeout=5)
        with pytest.raises(grpc.RpcError) as refused:
            orders.ListOrders(order_pb2.ListOrdersRequest(), metadata=metadata, timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_login_has_a_tight_local_bucket_in_each_envoy(
    tenant: str, edges: tuple[Edge, Edge]
) -> None:
    def attempt(edge: Edge) -> httpx.Response:
        return httpx.post(
            f"{edge.rest_url}/v1/auth/login",
            json={"email": "nobody@example.com", "password": "wrong password 123"},
            headers={"X-Tenant-Id": tenant},
        )

    first = [attempt(edges[0]) for _ in range(4)]
    assert [r.status_code for r in first[:2]] == [401, 401]  # the burst: twice the rate
    limited = first[-1]
    body = assert_error(limited, 429, "rate_limited")
    assert body["details"][0]["reason"] == "local_rate_limited"
    assert limited.headers["retry-after"] == "1"
    # The bucket is this Envoy's own: the other replica still has its tokens.
    assert attempt(edges[1]).status_code == 401


def test_with_the_rate_limit_service_down_traffic_passes(
    platform: State, http: httpx.Client, tenant: str, run_dir: Path
) -> None:
    dave = identity.customer(http, tenant)
    env = {"REDIS_URL": platform.redis_url, "RATELIMIT_RULES": "user=1/hour"}
    with ExitStack() as service:
        doomed = service.enter_context(
            running_service("ratelimit", run_dir / "doomed", env, platform)
        )
        with (
            running_edge(platform, run_dir / "edge-c", ratelimit=doomed) as alone,
            httpx.Client(base_url=alone.rest_url, timeout=10) as client,
        ):
            assert client.get("/v1/orders", headers=dave.headers()).status_code == 200
            assert client.get("/v1/orders", headers=dave.headers()).status_code == 429
            service.close()  # the rate-limit service goes away under a running Envoy
            passed = [client.get("/v1/orders", headers=dave.headers()) for _ in range(3)]
            assert [r.status_code for r in passed] == [200] * 3
