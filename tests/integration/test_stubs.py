"""The fake upstreams (ERP, Warehouse) as real processes: APIs, tenancy and injected faults."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.launcher import ROOT, procs
from services.launcher.stubs import start_stub
from tests.upstream_admin import running_stub

DATA = ROOT / "stubs" / "data"


@pytest.fixture(scope="module")
def stub_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    run_dir = tmp_path_factory.mktemp("stubs")
    with running_stub("erp", run_dir) as erp_url, running_stub("warehouse", run_dir) as wh_url:
        yield {"erp": erp_url, "warehouse": wh_url}


@pytest.fixture(autouse=True)
def no_faults(stub_urls: dict[str, str]) -> Iterator[None]:
    """Every test starts, and leaves the stubs, without faults."""
    for url in stub_urls.values():
        httpx.delete(f"{url}/_admin/faults").raise_for_status()
    yield
    for url in stub_urls.values():
        httpx.delete(f"{url}/_admin/faults").raise_for_status()


@pytest.fixture
async def erp(stub_urls: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stub_urls["erp"], timeout=5) as client:
        yield client


@pytest.fixture
async def warehouse(stub_urls: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stub_urls["warehouse"], timeout=5) as client:
        yield client


def _as(tenant: str, **headers: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, **{k.replace("_", "-"): v for k, v in headers.items()}}


async def _create(erp: httpx.AsyncClient, tenant: str, sku: str = "TEST-1") -> dict[str, Any]:
    body = {"sku": sku, "name": "Test product", "price_cents": 1000}
    response = await erp.post("/products", json=body, headers=_as(tenant))
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


async def _faults(client: httpx.AsyncClient, **config: Any) -> None:
    response = await client.put("/_admin/faults", json=config)
    assert response.status_code == 200, response.text


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


# --- seed data ---------------------------------------------------------------------------


def test_the_seeded_stock_covers_exactly_the_seeded_catalogue() -> None:
    catalog = json.loads((DATA / "catalog.json").read_text())["tenants"]
    stock = json.loads((DATA / "stock.json").read_text())["tenants"]
    assert {t: len(products) for t, products in catalog.items()} == {"demo": 30, "contract": 3}
    assert not any(p["deleted"] for products in catalog.values() for p in products)
    for tenant, products in catalog.items():
        assert {p["sku"] for p in products} == set(stock[tenant])


def test_only_known_stubs_can_be_started(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stub"):
        start_stub("crm", tmp_path, procs.free_port(), dict(os.environ))


# --- ERP ---------------------------------------------------------------------------------


async def test_the_erp_lists_live_products_by_sku_in_pages(erp: httpx.AsyncClient) -> None:
    everything = (await erp.get("/products", headers=_as("demo"))).json()
    skus = [p["sku"] for p in everything["items"]]
    assert skus == [f"SKU-{i:04d}" for i in range(1, 31)]
    assert everything["has_more"] is False

    seen: list[str] = []
    pages: list[bool] = []
    params = {"limit": "10"}
    while True:
        page = (await erp.get("/products", params=params, headers=_as("demo"))).json()
        seen += [p["sku"] for p in page["items"]]
        pages.append(page["has_more"])
        if not page["has_more"]:
            break
        params = {"limit": "10", "after": seen[-1]}
    assert seen == skus
    assert pages == [True, True, False]  # the last full page says nothing follows

    contract = (await erp.get("/products", headers=_as("contract"))).json()["items"]
    assert [p["sku"] for p in contract] == ["SKU-0001", "SKU-0002", "SKU-0003"]


async def test_a_tenant_never_sees_another_tenants_products(
    erp: httpx.AsyncClient, tenant: str
) -> None:
    demo = (await erp.get("/products", params={"limit": "1"}, headers=_as("demo"))).json()
    demo_product = demo["items"][0]
    other = await erp.get(f"/products/{demo_product['id']}", headers=_as("contract"))
    assert other.status_code == 404
    assert _code(other) == "not_found"

    created = await _create(erp, tenant, sku=demo_product["sku"])
    assert created["id"] != demo_product["id"]
    assert (await erp.get(f"/products/{created['id']}", headers=_as("demo"))).status_code == 404
    again = (await erp.get(f"/products/{demo_product['id']}", headers=_as("demo"))).json()
    assert again == demo_product  # the same sku in another tenant changed nothing here
    mine = (await erp.get("/products", headers=_as(tenant))).json()["items"]
    assert [p["id"] for p in mine] == [created["id"]]


async def test_posting_a_known_sku_replaces_the_product_and_bumps_its_version(
    erp: httpx.AsyncClient, tenant: str
) -> None:
    first = await _create(erp, tenant)
    assert (first["version"], first["deleted"], first["description"]) == (1, False, "")
    body = {"sku": "TEST-1", "name": "Renamed", "description": "New", "price_cents": 5}
    second = await erp.post("/products", json=body, headers=_as(tenant))
    assert second.status_code == 200
    assert second.headers["ETag"] == '"2"'
    product = second.json()
    assert (product["id"], product["version"], product["name"]) == (first["id"], 2, "Renamed")
    assert product["created_at"] == first["created_at"]


async def test_put_replaces_only_the_version_the_caller_saw(
    erp: httpx.AsyncClient, tenant: str
) -> None:
    product = await _create(erp, tenant)
    path, body = f"/products/{product['id']}", {"name": "Second", "price_cents": 2000}

    missing = await erp.put(path, json=body, headers=_as(tenant))
    assert (missing.status_code, _code(missing)) == (428, "precondition_required")
    ok = await erp.put(path, json=body, headers=_as(tenant, if_match='"1"'))
    assert (ok.status_code, ok.headers["ETag"], ok.json()["version"]) == (200, '"2"', 2)
    stale = await erp.put(path, json=body, headers=_as(tenant, if_match='"1"'))
    assert (stale.status_code, _code(stale)) == (412, "version_mismatch")
    weak = await erp.put(
        path, json={**body, "name": "Third"}, headers=_as(tenant, if_match='W/"2"')
    )
    assert weak.json()["version"] == 3
    bare = await erp.put(path, json={**body, "name": "Fourth"}, headers=_as(tenant, if_match="3"))
    assert bare.json()["version"] == 4
    moved = await erp.put(path, json={**body, "sku": "OTHER"}, headers=_as(tenant, if_match="4"))
    assert (moved.status_code, _code(moved)) == (400, "bad_request")

    now = (await erp.get(path, headers=_as(tenant))).json()
    assert (now["version"], now["name"], now["sku"]) == (4, "Fourth", "TEST-1")


async def test_delete_is_soft_and_a_post_restores(erp: httpx.AsyncClient, tenant: str) -> None:
    product = await _create(erp, tenant)
    path = f"/products/{product['id']}"
    assert (await erp.delete(path, headers=_as(tenant))).status_code == 428
    deleted = await erp.delete(path, headers=_as(tenant, if_match='"1"'))
    assert deleted.status_code == 200
    assert (deleted.json()["deleted"], deleted.json()["version"]) == (True, 2)

    shown = await erp.get(path, headers=_as(tenant))
    assert (shown.status_code, shown.json()["deleted"], shown.headers["ETag"]) == (200, True, '"2"')
    assert (await erp.get("/products", headers=_as(tenant))).json()["items"] == []
    assert (await erp.delete(path, headers=_as(tenant, if_match='"2"'))).status_code == 404
    edit = {"name": "x", "price_cents": 1}
    assert (await erp.put(path, json=edit, headers=_as(tenant, if_match='"2"'))).status_code == 404

    body = {"sku": "TEST-1", "name": "Back", "price_cents": 1}
    restored = await erp.post("/products", json=body, headers=_as(tenant))
    assert restored.status_code == 200
    assert (restored.json()["id"], restored.json()["deleted"]) == (product["id"], False)
    assert restored.json()["version"] == 3


async def test_an_idempotency_key_replays_the_first_answer(
    erp: httpx.AsyncClient, tenant: str
) -> None:
    body = {"sku": "TEST-1", "name": "Once", "price_cents": 100}
    headers = _as(tenant, idempotency_key="create-1")
    first = await erp.post("/products", json=body, headers=headers)
    replay = await erp.post("/products", json=body, headers=headers)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert replay.headers["ETag"] == '"1"'

    path = f"/products/{first.json()['id']}"
    edit = {"name": "Edited", "price_cents": 200}
    put_headers = _as(tenant, idempotency_key="edit-1", if_match='"1"')
    assert (await erp.put(path, json=edit, headers=put_headers)).json()["version"] == 2
    again = await erp.put(path, json=edit, headers=put_headers)
    assert (again.status_code, again.json()["version"]) == (200, 2)
    assert (await erp.get(path, headers=_as(tenant))).json()["version"] == 2

    other_body = await erp.post("/products", json={**body, "price_cents": 1}, headers=headers)
    assert (other_body.status_code, _code(other_body)) == (422, "idempotency_mismatch")
    other_path = await erp.put(path, json=body, headers=headers)
    assert (other_path.status_code, _code(other_path)) == (422, "idempotency_mismatch")
    # Keys are the tenant's own: another tenant's same key is a new request.
    elsewhere = await erp.post(
        "/products", json=body, headers=_as(f"{tenant}-b", idempotency_key="create-1")
    )
    assert elsewhere.status_code == 201
    assert elsewhere.json()["id"] != first.json()["id"]


async def test_concurrent_writes_of_one_version_let_exactly_one_win(
    erp: httpx.AsyncClient, tenant: str
) -> None:
    product = await _create(erp, tenant)
    path = f"/products/{product['id']}"
    edits = [
        erp.put(path, json={"name": f"n{i}", "price_cents": i}, headers=_as(tenant, if_match="1"))
        for i in range(10)
    ]
    statuses = sorted(r.status_code for r in await asyncio.gather(*edits))
    assert statuses == [200] + [412] * 9

    body = {"sku": "TEST-2", "name": "Once", "price_cents": 1}
    same_key = _as(tenant, idempotency_key="burst")
    answers = await asyncio.gather(
        *(erp.post("/products", json=body, headers=same_key) for _ in range(10))
    )
    assert {a.content for a in answers} == {answers[0].content}
    assert sum("Idempotent-Replayed" in a.headers for a in answers) == 9


def _product(**changes: Any) -> bytes:
    """A valid new product's JSON with some fields changed (None drops one)."""
    body = {"sku": "A-1", "name": "x", "price_cents": 1, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


MALFORMED_WRITES = [
    pytest.param(_product()[:-1], id="malformed JSON"),
    pytest.param(b"[" + _product() + b"]", id="not an object"),
    pytest.param(_product(price_cents="1"), id="price as string"),
    pytest.param(_product(price_cents=True), id="price as bool"),
    pytest.param(_product(price_cents=1.5), id="price as float"),
    pytest.param(_product(price_cents=-1), id="negative price"),
    pytest.param(_product(price_cents=2**31), id="price too big"),
    pytest.param(_product(sku="a-1"), id="lowercase sku"),
    pytest.param(_product(sku="-A"), id="sku starts with a dash"),
    pytest.param(_product(sku="A" * 65), id="sku too long"),
    pytest.param(_product(sku=None), id="no sku"),
    pytest.param(_product(name=""), id="empty name"),
    pytest.param(_product(name="n" * 201), id="long name"),
    pytest.param(_product(description="d" * 2001), id="long description"),
    pytest.param(_product(colour="red"), id="unknown field"),
    pytest.param(_product().replace(b"1}", b"NaN}"), id="NaN"),
]


@pytest.mark.parametrize("body", MALFORMED_WRITES)
async def test_the_erp_refuses_malformed_products(
    erp: httpx.AsyncClient, tenant: str, body: bytes
) -> None:
    response = await erp.post("/products", content=body, headers=_as(tenant))
    assert (response.status_code, _code(response)) == (400, "bad_request")
    assert (await erp.get("/products", headers=_as(tenant))).json()["items"] == []


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        pytest.param({}, {}, id="no tenant"),
        pytest.param({"limit": "0"}, _as("demo"), id="limit 0"),
        pytest.param({"limit": "201"}, _as("demo"), id="limit 201"),
        pytest.param({"limit": "ten"}, _as("demo"), id="limit not a number"),
        pytest.param({"after": "sku 1"}, _as("demo"), id="after not a sku"),
    ],
)
async def test_the_erp_refuses_malformed_listings(
    erp: httpx.AsyncClient, params: dict[str, str], headers: dict[str, str]
) -> None:
    response = await erp.get("/products", params=params, headers=headers)
    assert (response.status_code, _code(response)) == (400, "bad_request")


# --- Warehouse ---------------------------------------------------------------------------


async def test_the_warehouse_reads_many_skus_in_request_order(warehouse: httpx.AsyncClient) -> None:
    skus = ["SKU-0003", "NEVER-STOCKED", "SKU-0007", "SKU-0003", "SKU-0001"]
    response = await warehouse.get("/stock", params=[("sku", s) for s in skus], headers=_as("demo"))
    items = response.json()["items"]
    assert [i["sku"] for i in items] == ["SKU-0003", "NEVER-STOCKED", "SKU-0007", "SKU-0001"]
    unknown, sold_out = items[1], items[2]
    assert unknown == {
        "sku": "NEVER-STOCKED",
        "on_hand": 0,
        "reserved": 0,
        "available": 0,
        "updated_at": None,
    }
    assert (sold_out["on_hand"], sold_out["available"]) == (0, 0)
    assert sold_out["updated_at"] is not None  # known to be empty, not unknown
    for item in items:
        assert item["available"] == max(item["on_hand"] - item["reserved"], 0)

    one = (await warehouse.get("/stock/SKU-0003", headers=_as("demo"))).json()
    assert one == items[0]
    contract = (await warehouse.get("/stock/SKU-0001", headers=_as("contract"))).json()
    assert contract != items[3]


async def test_putting_stock_sets_it_for_that_tenant_only(
    warehouse: httpx.AsyncClient, tenant: str
) -> None:
    before = datetime.now(UTC)
    response = await warehouse.put(
        "/stock/SKU-0001", json={"on_hand": 3, "reserved": 5}, headers=_as(tenant)
    )
    item = response.json()
    assert (response.status_code, item["on_hand"], item["reserved"], item["available"]) == (
        200,
        3,
        5,
        0,
    )
    stamped = datetime.fromisoformat(item["updated_at"])
    assert before - timedelta(seconds=1) <= stamped <= datetime.now(UTC)
    assert (await warehouse.get("/stock/SKU-0001", headers=_as(tenant))).json() == item
    others = (await warehouse.get("/stock/SKU-0001", headers=_as(f"{tenant}-b"))).json()
    assert (others["on_hand"], others["updated_at"]) == (0, None)

    defaulted = await warehouse.put("/stock/SKU-0002", json={"on_hand": 4}, headers=_as(tenant))
    assert (defaulted.json()["reserved"], defaulted.json()["available"]) == (0, 4)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        pytest.param("GET", "/stock", None, _as("demo"), id="no skus"),
        pytest.param(
            "GET",
            "/stock?" + "&".join(f"sku=S{i}" for i in range(201)),
            None,
            _as("demo"),
            id="201 skus",
        ),
        pytest.param("GET", "/stock?sku=SKU-0001&sku=bad sku", None, _as("demo"), id="bad sku"),
        pytest.param("GET", "/stock/SKU-0001", None, {}, id="no tenant"),
        pytest.param("PUT", "/stock/SKU-0001", b'{"on_hand": -1}', _as("demo"), id="negative"),
        pytest.param("PUT", "/stock/SKU-0001", b'{"on_hand": true}', _as("demo"), id="bool"),
        pytest.param("PUT", "/stock/SKU-0001", b'{"reserved": 1}', _as("demo"), id="no on_hand"),
        pytest.param(
            "PUT", "/stock/SKU-0001", b'{"on_hand": 1, "x": 1}', _as("demo"), id="unknown field"
        ),
        pytest.param("PUT", "/stock/SKU-0001", b'{"on_hand": 1', _as("demo"), id="malformed JSON"),
        pytest.param("PUT", "/stock/lower", b'{"on_hand": 1}', _as("demo"), id="bad sku in path"),
    ],
)
async def test_the_warehouse_refuses_malformed_requests(
    warehouse: httpx.AsyncClient,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
) -> None:
    response = await warehouse.request(method, path, content=body, headers=headers)
    assert (response.status_code, _code(response)) == (400, "bad_request")
    seeded = (await warehouse.get("/stock/SKU-0001", headers=_as("demo"))).json()
    assert seeded["on_hand"] != 1  # a refused PUT changed nothing


# --- fault injection ---------------------------------------------------------------------


async def test_an_injected_error_answers_without_touching_state(
    erp: httpx.AsyncClient, tenant: str
) -> None:
    await _faults(erp, error_rate=1)
    body = {"sku": "TEST-1", "name": "x", "price_cents": 1}
    response = await erp.post("/products", json=body, headers=_as(tenant))
    assert (response.status_code, _code(response)) == (503, "injected_fault")
    await _faults(erp, error_rate=1, error_status=429)
    assert (await erp.post("/products", json=body, headers=_as(tenant))).status_code == 429
    await erp.delete("/_admin/faults")
    assert (await erp.get("/products", headers=_as(tenant))).json()["items"] == []


async def test_injected_latency_delays_business_routes_only(warehouse: httpx.AsyncClient) -> None:
    await _faults(warehouse, latency_ms=300, jitter_ms=50)
    started = time.monotonic()
    assert (await warehouse.get("/stock/SKU-0001", headers=_as("demo"))).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert (await warehouse.get("/_admin/health")).json() == {"status": "serving"}
    assert time.monotonic() - started < 0.25


async def test_a_seed_makes_the_faults_repeat(erp: httpx.AsyncClient) -> None:
    async def outcomes() -> list[int]:
        await _faults(erp, error_rate=0.5, seed=42)
        return [(await erp.get("/products/x", headers=_as("demo"))).status_code for _ in range(30)]

    first, second = await outcomes(), await outcomes()
    assert first == second
    assert set(first) == {404, 503}  # both outcomes occur, so the rate is applied


async def test_a_down_stub_drops_connections_but_keeps_its_admin_api(
    erp: httpx.AsyncClient,
) -> None:
    await _faults(erp, down=True)
    with pytest.raises(httpx.TransportError):
        await erp.get("/products", headers=_as("demo"))
    assert (await erp.get("/_admin/health")).status_code == 200
    await erp.delete("/_admin/faults")
    assert (await erp.get("/products", headers=_as("demo"))).status_code == 200


async def test_faults_can_target_one_tenant_or_one_path(warehouse: httpx.AsyncClient) -> None:
    await _faults(warehouse, error_rate=1, tenant="demo")
    assert (await warehouse.get("/stock/SKU-0001", headers=_as("demo"))).status_code == 503
    assert (await warehouse.get("/stock/SKU-0001", headers=_as("contract"))).status_code == 200

    await _faults(warehouse, error_rate=1, path_prefix="/stock/")
    assert (await warehouse.get("/stock/SKU-0001", headers=_as("demo"))).status_code == 503
    many = await warehouse.get("/stock", params={"sku": "SKU-0001"}, headers=_as("demo"))
    assert many.status_code == 200


async def test_an_injected_timeout_hangs_then_answers_504(erp: httpx.AsyncClient) -> None:
    await _faults(erp, timeout_rate=1, hang_s=0.4)
    with pytest.raises(httpx.ReadTimeout):
        await erp.get("/products", headers=_as("demo"), timeout=0.1)
    started = time.monotonic()
    patient = await erp.get("/products", headers=_as("demo"))
    assert (patient.status_code, _code(patient)) == (504, "injected_fault")
    assert time.monotonic() - started >= 0.4


async def test_stats_count_business_requests_by_route(erp: httpx.AsyncClient) -> None:
    await erp.delete("/_admin/stats")
    for product_id in ("a", "b"):
        await erp.get(f"/products/{product_id}", headers=_as("demo"))
    await erp.get("/products", headers=_as("demo"))
    await _faults(erp, error_rate=1)
    await erp.get("/products/c", headers=_as("demo"))
    await erp.get("/_admin/faults")

    stats = (await erp.get("/_admin/stats")).json()
    assert stats["requests"] == 4
    assert stats["by_route"] == {"GET /products/{id}": 3, "GET /products": 1}
    assert stats["faults"] == {"latency": 0, "error": 1, "timeout": 0, "down": 0}
    cleared = (await erp.delete("/_admin/stats")).json()
    assert (cleared["requests"], cleared["by_route"], cleared["faults"]["error"]) == (0, {}, 0)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"error_rate": 0.1, "colour": "red"}, id="unknown field"),
        pytest.param({"error_rate": 1.5}, id="rate above 1"),
        pytest.param({"error_rate": 0.6, "timeout_rate": 0.6}, id="rates above 1 together"),
        pytest.param({"error_status": 404}, id="status not 5xx or 429"),
        pytest.param({"latency_ms": -1}, id="negative latency"),
        pytest.param({"down": "yes"}, id="down not a bool"),
        pytest.param({"seed": 1.5}, id="seed not an integer"),
        pytest.param({"path_prefix": "stock"}, id="prefix not a path"),
        pytest.param([], id="not an object"),
    ],
)
async def test_a_bad_fault_config_is_refused_and_the_old_one_kept(
    warehouse: httpx.AsyncClient, config: Any
) -> None:
    await _faults(warehouse, latency_ms=1)
    refused = await warehouse.put("/_admin/faults", json=config)
    assert (refused.status_code, _code(refused)) == (400, "bad_request")
    assert (await warehouse.get("/_admin/faults")).json()["latency_ms"] == 1


def test_stub_faults_sets_the_faults_a_stub_starts_with(tmp_path: Path) -> None:
    faults = json.dumps({"error_rate": 1, "error_status": 500, "tenant": "demo"})
    with running_stub("warehouse", tmp_path, faults=faults) as url:
        assert httpx.get(f"{url}/_admin/faults").json()["error_status"] == 500
        assert httpx.get(f"{url}/stock/SKU-0001", headers=_as("demo")).status_code == 500
