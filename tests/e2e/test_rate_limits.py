"""Rate limits at the edge: per user and per address for the whole edge, local per route,
and login attempts counted by the rate-limit service.

Two Envoys of this module form one edge: each lists both in its local cluster, so
each admits half of a user's quota and the pair admits the quota, with no call out
of Envoy; another user's budget is untouched, and the 429 is the platform's JSON
error with Retry-After and RateLimit headers. Login has a tight token bucket in
each Envoy. Login attempts per address are counted by the rate-limit service, and
with that service down traffic passes (fail open).
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from itertools import cycle
from pathlib import Path

import grpc
import httpx
import pytest
from shop.order.v1 import order_pb2, order_pb2_grpc

from services.launcher.edge_limits import EdgeLimits, Quota
from services.launcher.platform import State
from tests import identity
from tests.e2e.conftest import assert_error
from tests.edges import Edge, running_edge, running_edges, running_service

pytestmark = pytest.mark.e2e

PER_USER = 10  # per hour for the whole edge: no refill worth a request inside a test
LIMITS = EdgeLimits(
    route_rps=1000, credentials_rps=1, address=Quota(100_000), user=Quota(PER_USER, 3600)
)


@pytest.fixture(scope="module")
def run_dir(platform: State) -> Path:
    return Path(platform.run_dir) / "rate-limits"


@pytest.fixture(scope="module")
def edges(platform: State, run_dir: Path) -> Iterator[tuple[Edge, ...]]:
    with running_edges(platform, run_dir, 2, LIMITS) as pair:
        yield pair


def _stat(edge: Edge, name: str) -> int:
    """One counter of an Envoy's admin /stats (0 before it exists)."""
    with urllib.request.urlopen(f"{edge.admin_url}/stats?filter=^{name}$", timeout=5) as r:
        _, _, value = r.read().decode().strip().partition(": ")
    return int(value or 0)


def _away_from_the_hour() -> None:
    """Skip past an hour boundary (where the service's windows start) due in the next seconds."""
    left = 3600 - time.time() % 3600
    if left < 15:
        time.sleep(left + 0.5)


def test_two_envoys_of_one_edge_hold_a_users_quota_between_them(
    http: httpx.Client, tenant: str, edges: tuple[Edge, ...]
) -> None:
    alice, bob = identity.customer(http, tenant), identity.customer(http, tenant)
    clients = [httpx.Client(base_url=e.rest_url, timeout=10) for e in edges]
    calls_out = [_stat(e, "cluster.ratelimit.upstream_rq_total") for e in edges]
    try:
        answers = [
            client.get("/v1/orders", headers=alice.headers())
            for client, _ in zip(cycle(clients), range(PER_USER + 4), strict=False)
        ]
        assert [a.status_code for a in answers] == [200] * PER_USER + [429] * 4

        refused = answers[-1]
        body = assert_error(refused, 429, "rate_limited")
        assert body["details"][0]["reason"] == "local_rate_limited"
        assert refused.headers["retry-after"] == str(3600 // PER_USER)
        assert refused.headers["ratelimit-policy"] == f'"user";q={PER_USER};w=3600'
        assert refused.headers["ratelimit"].startswith('"user";r=0;')
        # Both replicas refuse: the quota is the edge's, not each Envoy's.
        for client in clients:
            assert client.get("/v1/orders", headers=alice.headers()).status_code == 429
            assert client.get("/v1/orders", headers=bob.headers()).status_code == 200
    finally:
        for client in clients:
            client.close()
    # No request of these asked the rate-limit service.
    assert [_stat(e, "cluster.ratelimit.upstream_rq_total") for e in edges] == calls_out


def test_each_envoy_admits_its_share_of_the_quota(
    http: httpx.Client, tenant: str, edges: tuple[Edge, ...]
) -> None:
    carol = identity.customer(http, tenant)
    share = PER_USER // len(edges)
    for edge in edges:
        with httpx.Client(base_url=edge.rest_url, timeout=10) as client:
            answers = [client.get("/v1/orders", headers=carol.headers()) for _ in range(share + 2)]
        assert [a.status_code for a in answers] == [200] * share + [429] * 2


def test_the_rate_limited_answer_reaches_native_grpc_callers_as_resource_exhausted(
    http: httpx.Client, tenant: str, edges: tuple[Edge, ...]
) -> None:
    dave = identity.customer(http, tenant)
    with grpc.insecure_channel(edges[0].grpc_target) as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        metadata = [("authorization", f"Bearer {dave.token}")]
        for _ in range(PER_USER // len(edges)):
            orders.ListOrders(order_pb2.ListOrdersRequest(), metadata=metadata, timeout=5)
        with pytest.raises(grpc.RpcError) as refused:
            orders.ListOrders(order_pb2.ListOrdersRequest(), metadata=metadata, timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_login_has_a_tight_local_bucket_in_each_envoy(tenant: str, edges: tuple[Edge, ...]) -> None:
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


def test_an_envoy_alone_admits_the_whole_quota_of_an_address(
    platform: State, tenant: str, run_dir: Path
) -> None:
    limits = EdgeLimits(address=Quota(6, 3600))
    # A source address of its own: the Envoy's JWKS fetches come from 127.0.0.1.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with (
        running_edge(platform, run_dir / "edge-alone", limits=limits) as alone,
        httpx.Client(base_url=alone.rest_url, transport=transport, timeout=10) as client,
    ):
        answers = [
            client.get("/v1/products?limit=1", headers={"X-Tenant-Id": tenant}) for _ in range(8)
        ]
    assert [a.status_code for a in answers] == [200] * 6 + [429] * 2
    assert_error(answers[-1], 429, "rate_limited")
    assert answers[-1].headers["ratelimit-policy"] == '"remote_address";q=6;w=3600'
    assert answers[-1].headers["retry-after"] == "600"


def test_login_attempts_per_address_are_counted_by_the_service_which_fails_open(
    platform: State, tenant: str, run_dir: Path
) -> None:
    rules = "generic_key:login,remote_address=1/hour"
    env = {"REDIS_URL": platform.redis_url, "RATELIMIT_RULES": rules}

    def attempt(client: httpx.Client) -> httpx.Response:
        return client.post(
            "/v1/auth/login",
            json={"email": f"{uuid.uuid4().hex}@example.com", "password": "wrong password 123"},
            headers={"X-Tenant-Id": tenant},
        )

    # A source address of its own, so no earlier login from 127.0.0.1 counts.
    transport = httpx.HTTPTransport(local_address="127.0.0.3")
    _away_from_the_hour()
    with ExitStack() as service:
        doomed = service.enter_context(
            running_service("ratelimit", run_dir / "doomed", env, platform)
        )
        with (
            running_edge(platform, run_dir / "edge-c", ratelimit=doomed) as alone,
            httpx.Client(base_url=alone.rest_url, transport=transport, timeout=10) as client,
        ):
            assert attempt(client).status_code == 401
            refused = attempt(client)
            assert_error(refused, 429, "rate_limited")
            assert 0 < int(refused.headers["retry-after"]) <= 3600
            policy = '"generic_key-login-remote_address";q=1;w=3600'
            assert refused.headers["ratelimit-policy"] == policy
            service.close()  # the rate-limit service goes away under a running Envoy
            passed = [attempt(client) for _ in range(3)]
            assert [r.status_code for r in passed] == [401] * 3
