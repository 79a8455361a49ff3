"""The product gateway end to end: REST through Envoy to the gateway, the ERP and the Warehouse.

Seed 000's minimum (a read path, a write path, idempotency) and the issue's
resilience: upstream down gives a 503 JSON error, stale-if-error, single-flight
under 50 concurrent misses, the breaker opening and recovering, v2 saying
"unknown" when only the Warehouse fails.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from shop.product.v1 import product_pb2, product_pb2_grpc

from services.launcher.platform import State
from tests import identity
from tests.e2e.conftest import assert_error
from tests.identity import Account
from tests.upstream_admin import StubAdmin

pytestmark = pytest.mark.e2e

V1_FIELDS = {"id", "sku", "name", "description", "priceCents", "version", "stock"}


class Products:
    """A REST client of the product API for one tenant: as its admin, or anonymous."""

    def __init__(self, http: httpx.Client, tenant: str, admin: Account | None = None) -> None:
        self.http, self.tenant, self.admin = http, tenant, admin

    def h(self, **extra: str) -> dict[str, str]:
        if self.admin is not None:
            return self.admin.headers(**extra)
        return {"X-Tenant-Id": self.tenant, **{k.replace("_", "-"): v for k, v in extra.items()}}

    def create(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        return self.http.post(
            "/v1/products", json=body, headers=self.h(Idempotency_Key=key or uuid.uuid4().hex)
        )

    def put(
        self, pid: str, body: dict[str, Any], version: int | None, key: str | None = None
    ) -> httpx.Response:
        headers = self.h(Idempotency_Key=key or uuid.uuid4().hex)
        if version is not None:
            headers["If-Match"] = f'"{version}"'
        return self.http.put(f"/v1/products/{pid}", json=body, headers=headers)

    def delete(self, pid: str, version: int | None, **headers: str) -> httpx.Response:
        extra = {} if version is None else {"If-Match": f'"{version}"'}
        return self.http.delete(f"/v1/products/{pid}", headers={**self.h(**headers), **extra})

    def get(self, pid: str, version: str = "v1") -> httpx.Response:
        return self.http.get(f"/{version}/products/{pid}", headers=self.h())

    def list(self, version: str = "v1", **params: Any) -> httpx.Response:
        return self.http.get(f"/{version}/products", params=params, headers=self.h())

    def made(self, sku: str = "WIDGET-1", price: int = 1000) -> dict[str, Any]:
        response = self.create({"sku": sku, "name": f"Widget {sku}", "priceCents": price})
        assert response.status_code == 201, response.text
        product: dict[str, Any] = response.json()
        return product


@pytest.fixture
def products(platform: State, http: httpx.Client, tenant: str) -> Products:
    return Products(http, tenant, identity.admin(http, platform, tenant))


@pytest.fixture(scope="module")
def prober(platform: State, http: httpx.Client) -> Products:
    """An admin of a tenant of its own, whose writes show when the ERP serves again."""
    tenant = f"probe-{uuid.uuid4().hex[:8]}"
    return Products(http, tenant, identity.admin(http, platform, tenant))


@pytest.fixture
def erp(platform: State, prober: Products) -> Iterator[StubAdmin]:
    """The ERP stub's admin; faults are cleared and the breaker is closed again afterwards."""
    admin = StubAdmin(platform.erp_url)
    admin.clear()
    yield admin
    admin.clear()
    _wait_until_served(prober)


@pytest.fixture
def warehouse(platform: State, prober: Products) -> Iterator[StubAdmin]:
    admin = StubAdmin(platform.warehouse_url)
    admin.clear()
    yield admin
    admin.clear()
    _wait_until_served(prober)


def error_info(body: dict[str, Any]) -> dict[str, str]:
    """The metadata of the error's google.rpc.ErrorInfo detail."""
    (info,) = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    metadata: dict[str, str] = info["metadata"]
    return metadata


def _wait_until_served(prober: Products) -> None:
    """Until both breakers let an uncached write through (reset timeout is 1 s in tests):
    a new SKU has no cached stock, so its answer needs the Warehouse too."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sku = f"PROBE-{uuid.uuid4().hex[:8].upper()}"
        made = prober.create({"sku": sku, "name": "probe", "priceCents": 1})
        if made.status_code in (200, 201):
            return
        time.sleep(0.2)
    raise AssertionError("the gateway did not recover within 10 s")


# --- Read path -------------------------------------------------------------------------------


def test_the_list_merges_erp_products_with_warehouse_stock(http: httpx.Client) -> None:
    demo = Products(http, "demo")
    seen: list[dict[str, Any]] = []
    cursor = ""
    while True:
        response = demo.list(limit=12, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        page = response.json()
        seen += page["items"]
        if "nextCursor" not in page:
            break
        cursor = page["nextCursor"]
    assert len(seen) == 30
    assert [p["sku"] for p in seen] == sorted(p["sku"] for p in seen)
    assert all(set(p) == V1_FIELDS for p in seen)
    by_sku = {p["sku"]: p for p in seen}
    # stubs/data/stock.json: SKU-0001 has 47 on hand, 2 reserved; SKU-0007 none.
    assert by_sku["SKU-0001"]["stock"] == 45
    assert by_sku["SKU-0007"]["stock"] == 0


def test_a_product_is_read_merged_with_its_etag_and_then_from_cache(
    products: Products, erp: StubAdmin
) -> None:
    made = products.made("READ-1")
    before = erp.requests("GET /products/{id}")
    first = products.get(made["id"])
    second = products.get(made["id"])
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == made
    assert first.headers["etag"] == '"1"'
    # The miss is the gateway's header, the hit the route's (each exactly once).
    assert first.headers.get_list("cache-status") == ["shop-products; fwd=miss"]
    assert second.headers.get_list("cache-status") == ["shop-products; hit"]
    assert erp.requests("GET /products/{id}") == before + 1
    # An error is no cache hit.
    missing = products.get(str(uuid.uuid4()))
    assert missing.status_code == 404, missing.text
    assert "cache-status" not in missing.headers


def test_native_grpc_callers_see_cache_status_only_on_a_miss(
    platform: State, products: Products
) -> None:
    """Over native gRPC the edge adds nothing: a fresh hit is the absence of the header."""
    made = products.made("GRPC-READ-1")
    metadata = [("x-tenant-id", products.tenant)]
    request = product_pb2.GetProductRequest(id=made["id"])
    with grpc.insecure_channel(platform.grpc_target) as channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]
        seen = []
        for _ in range(2):
            answer, call = stub.GetProduct.with_call(request, metadata=metadata, timeout=5)
            assert answer.sku == "GRPC-READ-1"
            seen.append(dict(call.initial_metadata()).get("cache-status"))
    assert seen == ["shop-products; fwd=miss", None]


def test_inventory_shows_the_ledger_figures(
    products: Products, http: httpx.Client, platform: State
) -> None:
    made = products.made("STOCKED-1")
    unstocked = products.http.get(f"/v1/products/{made['id']}/inventory", headers=products.h())
    assert unstocked.status_code == 200, unstocked.text
    assert unstocked.json() == {
        "productId": made["id"], "sku": "STOCKED-1", "onHand": 0, "reserved": 0, "available": 0,
    }  # fmt: skip
    admin = identity.admin(http, platform, products.tenant).headers()
    restocked = http.put(
        f"/v1/admin/inventory/{made['id']}",
        json={"available": 9, "lowStockThreshold": 1},
        headers={**admin, "If-Match": '"0"', "Idempotency-Key": "restock-1"},
    )
    assert restocked.status_code == 200, restocked.text
    response = products.http.get(f"/v1/products/{made['id']}/inventory", headers=products.h())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "productId": made["id"], "sku": "STOCKED-1", "onHand": 9, "reserved": 0, "available": 9,
    }  # fmt: skip
    assert_error(
        products.http.get(f"/v1/products/{uuid.uuid4()}/inventory", headers=products.h()),
        404,
        "not_found",
    )


def test_unknown_deleted_and_other_tenants_products_are_not_found(
    products: Products, http: httpx.Client
) -> None:
    made = products.made("MINE-1")
    assert_error(Products(http, "someone-else").get(made["id"]), 404, "not_found")
    assert_error(products.get(str(uuid.uuid4())), 404, "not_found")
    assert_error(products.get("not-a-uuid"), 400, "invalid_argument")


def test_bad_page_requests_are_refused(products: Products, http: httpx.Client) -> None:
    too_many = assert_error(products.list(limit=101), 400, "invalid_argument")
    # 0 is the default page, as proto3 cannot tell it from a missing limit; the message says so.
    assert too_many["message"] == "limit: must be 1-100, or 0 or absent for 20"
    assert products.list(limit=0).status_code == 200
    cursor = Products(http, "demo").list(limit=1).json()["nextCursor"]
    assert_error(products.list(cursor=cursor), 400, "invalid_argument")  # another tenant's
    assert_error(Products(http, "demo").list(cursor=cursor + "x"), 400, "invalid_argument")
    assert_error(products.list(colour="red"), 400, "invalid_argument")


# --- Write path and idempotency --------------------------------------------------------------


def test_create_then_upsert_by_sku(products: Products) -> None:
    made = products.made("UPSERT-1", price=100)
    assert set(made) == V1_FIELDS
    assert (made["version"], made["stock"], made["priceCents"]) == (1, 0, 100)
    again = products.create({"sku": "UPSERT-1", "name": "Renamed", "priceCents": 150})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == made["id"]
    assert (again.json()["version"], again.json()["name"]) == (2, "Renamed")
    assert again.headers["etag"] == '"2"'


def test_a_write_is_visible_to_the_next_read_of_a_cached_list(products: Products) -> None:
    products.made("LIST-A")
    assert [p["sku"] for p in products.list().json()["items"]] == ["LIST-A"]
    products.made("LIST-B")
    assert [p["sku"] for p in products.list().json()["items"]] == ["LIST-A", "LIST-B"]


def test_a_retried_create_replays_and_the_erp_sees_one_write(
    products: Products, erp: StubAdmin
) -> None:
    body = {"sku": "ONCE-1", "name": "Once", "priceCents": 700}
    writes = erp.requests("POST /products")
    first = products.create(body, key="create-once")
    replay = products.create(body, key="create-once")
    assert first.status_code == 201
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    assert erp.requests("POST /products") == writes + 1


def test_a_key_reused_with_another_body_is_a_conflict(products: Products) -> None:
    products.create({"sku": "KEY-1", "name": "A", "priceCents": 1}, key="reused")
    response = products.create({"sku": "KEY-1", "name": "B", "priceCents": 1}, key="reused")
    assert_error(response, 409, "conflict")


def test_two_admins_with_one_key_make_two_independent_writes(
    platform: State, http: httpx.Client, products: Products
) -> None:
    other = Products(http, products.tenant, identity.admin(http, platform, products.tenant))
    first = products.create({"sku": "SHARED-1", "name": "A", "priceCents": 1}, key="shared")
    second = other.create({"sku": "SHARED-2", "name": "B", "priceCents": 2}, key="shared")
    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert first.json()["id"] != second.json()["id"]
    # Each admin's own retry still replays their own write.
    again = other.create({"sku": "SHARED-2", "name": "B", "priceCents": 2}, key="shared")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == second.json()


async def test_concurrent_retries_of_one_create_make_one_product(
    platform: State, products: Products, erp: StubAdmin
) -> None:
    writes = erp.requests("POST /products")
    body = {"sku": "RACE-1", "name": "Race", "priceCents": 5}
    headers = products.h(Idempotency_Key="race")
    async with httpx.AsyncClient(base_url=platform.rest_url, timeout=10) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/products", json=body, headers=headers) for _ in range(10))
        )
    assert sorted(a.status_code for a in answers) == [200] * 9 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert erp.requests("POST /products") == writes + 1


def test_writes_need_an_idempotency_key_and_valid_fields(
    products: Products, erp: StubAdmin
) -> None:
    writes = erp.requests("POST /products")
    no_key = products.http.post(
        "/v1/products", json={"sku": "A-1", "name": "a", "priceCents": 1}, headers=products.h()
    )
    assert_error(no_key, 400, "invalid_argument")
    bad = assert_error(products.create({"sku": "lower", "name": ""}), 400, "invalid_argument")
    fields = {v["field"] for d in bad["details"] for v in d.get("fieldViolations", [])}
    assert fields == {"sku", "name", "priceCents"}
    assert_error(
        products.create({"sku": "A-1", "name": "a", "priceCents": -1}), 400, "invalid_argument"
    )
    assert erp.requests("POST /products") == writes, "bad input must not reach the ERP"


def test_update_with_if_match_and_the_stale_and_missing_cases(products: Products) -> None:
    made = products.made("PUT-1")
    body = {"name": "New name", "description": "d", "priceCents": 2000}
    updated = products.put(made["id"], body, version=1)
    assert updated.status_code == 200, updated.text
    assert (updated.json()["version"], updated.json()["priceCents"]) == (2, 2000)
    assert updated.headers["etag"] == '"2"'
    stale = assert_error(products.put(made["id"], body, version=1), 409, "conflict")
    assert error_info(stale)["currentVersion"] == "2"  # what to send next, as for orders
    assert_error(products.put(made["id"], body, version=None), 428, "precondition_required")
    assert products.get(made["id"]).json()["version"] == 2


def test_a_retried_update_replays_instead_of_failing_as_stale(products: Products) -> None:
    made = products.made("PUT-2")
    body = {"name": "Once", "priceCents": 1}
    first = products.put(made["id"], body, version=1, key="put-once")
    again = products.put(made["id"], body, version=1, key="put-once")
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["version"] == first.json()["version"] == 2


def test_delete_is_soft_and_needs_the_current_version(products: Products) -> None:
    made = products.made("DEL-1")
    assert_error(products.delete(made["id"], version=None), 428, "precondition_required")
    stale = assert_error(products.delete(made["id"], version=7), 409, "conflict")
    assert error_info(stale)["currentVersion"] == "1"
    deleted = products.delete(made["id"], version=1)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": made["id"], "version": 2}
    assert_error(products.get(made["id"]), 404, "not_found")
    assert products.list().json()["items"] == []
    restored = products.create({"sku": "DEL-1", "name": "Back", "priceCents": 1})
    assert (restored.status_code, restored.json()["version"]) == (200, 3)


# --- Upstream failures -------------------------------------------------------------------------


def test_erp_down_gives_a_503_json_error_quickly(products: Products, erp: StubAdmin) -> None:
    erp.faults(down=True, tenant=products.tenant)
    started = time.monotonic()
    response = products.list()
    assert_error(response, 503, "unavailable")
    assert time.monotonic() - started < 3.0  # the read budget, not Envoy's 15 s
    assert response.json()["details"][0]["metadata"]["upstream"] == "erp"


def test_a_slow_erp_gives_a_504_within_the_read_budget(products: Products, erp: StubAdmin) -> None:
    erp.faults(latency_ms=5000, tenant=products.tenant)
    started = time.monotonic()
    assert_error(products.list(), 504, "deadline_exceeded")
    assert time.monotonic() - started < 3.5


def test_stale_if_error_serves_the_last_good_copy_marked_stale(
    products: Products, erp: StubAdmin
) -> None:
    made = products.made("STALE-1")
    assert products.get(made["id"]).status_code == 200
    erp.faults(error_rate=1.0, tenant=products.tenant)
    time.sleep(2.2)  # past the tests' 2 s TTL
    v1 = products.get(made["id"])
    assert v1.status_code == 200, v1.text
    assert v1.json() == made
    assert v1.headers["cache-status"] == "shop-products; hit; detail=stale-if-error"
    v2 = products.get(made["id"], version="v2")
    assert v2.status_code == 200, v2.text
    assert v2.json()["stale"] is True


def test_warehouse_down_fails_v1_but_v2_says_stock_is_unknown(
    products: Products, erp: StubAdmin, warehouse: StubAdmin
) -> None:
    # Made in the ERP directly, so the gateway has no stock figure for it, not even a stale one.
    made = erp.as_tenant(
        products.tenant,
        "POST",
        "/products",
        json={"sku": "NOSTOCK-1", "name": "n", "price_cents": 1},
    ).json()
    warehouse.faults(error_rate=1.0, tenant=products.tenant)
    assert_error(products.get(made["id"]), 503, "unavailable")
    v2 = products.get(made["id"], version="v2")
    assert v2.status_code == 200, v2.text
    body = v2.json()
    assert body["availability"] == "unknown"
    assert "stock" not in body
    assert "stockUpdatedAt" not in body
    assert (body["id"], body["version"], body["stale"]) == (made["id"], 1, False)


def test_warehouse_down_serves_the_last_stock_figure_marked_stale(
    products: Products, warehouse: StubAdmin
) -> None:
    made = products.made("OLDSTOCK-1")
    warehouse.faults(error_rate=1.0, tenant=products.tenant)
    time.sleep(2.2)  # past the tests' 2 s stock TTL, inside its stale window
    v1 = products.get(made["id"])
    assert v1.status_code == 200, v1.text
    assert v1.json()["stock"] == made["stock"]
    assert v1.headers["cache-status"].endswith("detail=stale-if-error")


async def test_fifty_concurrent_misses_make_one_erp_call(
    platform: State, products: Products, erp: StubAdmin
) -> None:
    made = products.made("HOT-1")
    erp.faults(latency_ms=300, tenant=products.tenant, path_prefix="/products/")
    before = erp.requests("GET /products/{id}")
    async with httpx.AsyncClient(
        base_url=platform.rest_url, timeout=10, limits=httpx.Limits(max_connections=50)
    ) as client:
        answers = await asyncio.gather(
            *(client.get(f"/v1/products/{made['id']}", headers=products.h()) for _ in range(50))
        )
    assert [a.status_code for a in answers] == [200] * 50
    assert all(a.json() == made for a in answers)
    assert erp.requests("GET /products/{id}") == before + 1


def test_transient_erp_errors_are_retried_with_jitter_within_the_read_budget(
    products: Products, erp: StubAdmin
) -> None:
    # 30% of ERP answers are 503 (seeded, so the run is repeatable): one try
    # per read would fail ~30% of reads, three tries ~3%.
    erp.faults(error_rate=0.3, seed=11, tenant=products.tenant)
    reached = erp.requests("GET /products")
    statuses, slowest = [], 0.0
    for limit in range(1, 31):  # distinct pages: every read must reach the ERP
        started = time.monotonic()
        response = products.list(limit=limit)
        slowest = max(slowest, time.monotonic() - started)
        statuses.append(response.status_code)
        if response.status_code != 200:
            assert_error(response, 503, "unavailable")
    assert statuses.count(200) >= 27, statuses
    assert erp.requests("GET /products") - reached > 30, "failed attempts were retried"
    assert slowest < 3.0


def test_the_breaker_opens_fails_fast_and_recovers(
    products: Products, erp: StubAdmin, http: httpx.Client
) -> None:
    erp.faults(error_rate=1.0)
    answers = [products.list(limit=n) for n in range(1, 6)]  # distinct, uncached pages
    assert all(a.status_code == 503 for a in answers)
    assert "circuit open" in answers[-1].json()["message"]
    # When the breaker will let a probe through, in whole seconds (the tests' reset is 1 s).
    assert answers[-1].headers["retry-after"] == "1"
    reached = erp.requests("GET /products")
    started = time.monotonic()
    assert_error(products.list(limit=50), 503, "unavailable")
    assert time.monotonic() - started < 0.5
    assert erp.requests("GET /products") == reached, "an open breaker must not call the ERP"
    erp.clear()
    time.sleep(1.1)  # the tests' reset timeout
    recovered = products.list(limit=51)
    assert recovered.status_code == 200, recovered.text


# --- v2 ----------------------------------------------------------------------------------------


def test_v2_adds_availability_and_freshness_to_the_v1_fields(http: httpx.Client) -> None:
    demo = Products(http, "demo")
    v1 = {p["sku"]: p for p in demo.list(limit=30).json()["items"]}
    v2 = {p["sku"]: p for p in demo.list("v2", limit=30).json()["items"]}
    assert v1.keys() == v2.keys()
    for sku, old in v1.items():
        assert {k: v2[sku][k] for k in old} == old, "v2 keeps every v1 field as it was"
    assert v2["SKU-0001"]["availability"] == "in_stock"
    assert v2["SKU-0007"]["availability"] == "out_of_stock"
    assert v2["SKU-0004"]["availability"] == "low_stock"
    assert {"stockUpdatedAt", "createdAt", "updatedAt", "stale"} <= v2["SKU-0001"].keys()
