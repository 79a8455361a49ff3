"""The fake Routing service as a real process: idempotent route decisions, tenancy, slowness."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.launcher import procs
from services.launcher.stubs import start_stub


def _env(faults: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STUB_FAULTS"}
    if faults is not None:
        env["STUB_FAULTS"] = faults
    return env


@pytest.fixture(scope="module")
def routing_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A routing stub started with `STUB_FAULTS='{}'`, so without its default latency."""
    run_dir = tmp_path_factory.mktemp("routing")
    proc, url = start_stub("routing", run_dir, procs.free_port(), _env("{}"))
    try:
        yield url
    finally:
        procs.stop(proc)


@pytest.fixture
async def routing(routing_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=routing_url, timeout=10) as client:
        yield client
        await client.delete("/_admin/faults")


def _as(tenant: str, key: str | None = None) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, **({"Idempotency-Key": key} if key is not None else {})}


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "shipment_id": "SHP-000001",
        "order_id": "ORD-000001",
        "event_type": "courier.scanned",
        "status": "in_transit",
        "destination": {"country": "DE", "postal_code": "10115", "city": "Berlin"},
        "priority": "standard",
    }
    return {**body, **changes}


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def _routes_of(client: httpx.AsyncClient, tenant: str, shipment: str) -> list[Any]:
    response = await client.get("/routes", params={"shipment_id": shipment}, headers=_as(tenant))
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def test_a_route_is_decided_from_the_shipment_and_its_destination(
    routing: httpx.AsyncClient, tenant: str
) -> None:
    response = await routing.post("/routes", json=_body(), headers=_as(tenant, "k-1"))
    assert response.status_code == 201, response.text
    route = response.json()
    assert set(route) == {
        "route_id", "shipment_id", "order_id", "hub", "lane", "eta", "created_at",
        "idempotency_key",
    }  # fmt: skip
    assert re.fullmatch(r"RT-[0-9a-f]+", route["route_id"])
    assert (route["shipment_id"], route["order_id"], route["idempotency_key"]) == (
        "SHP-000001",
        "ORD-000001",
        "k-1",
    )
    assert route["hub"] == "HUB-DE-10"
    assert response.headers["Location"] == f"/routes/{route['route_id']}"
    assert "Idempotent-Replayed" not in response.headers
    assert route["eta"].endswith("Z")
    assert route["created_at"].endswith("Z")
    assert datetime.fromisoformat(route["eta"]) > datetime.fromisoformat(route["created_at"])

    # The same question under another key gets another route, decided the same way.
    again = (await routing.post("/routes", json=_body(), headers=_as(tenant, "k-2"))).json()
    assert again["route_id"] != route["route_id"]
    assert (again["hub"], again["lane"]) == (route["hub"], route["lane"])


async def test_express_arrives_sooner_than_standard(
    routing: httpx.AsyncClient, tenant: str
) -> None:
    def transit(route: dict[str, Any]) -> float:
        eta, created = (datetime.fromisoformat(route[k]) for k in ("eta", "created_at"))
        return (eta - created).total_seconds()

    for postal_code in ("10115", "80331", "20121", "75001"):
        destination = {"country": "DE", "postal_code": postal_code, "city": "X"}
        routes = {}
        for priority in ("standard", "express"):
            body = _body(destination=destination, priority=priority)
            key = f"{postal_code}-{priority}"
            response = await routing.post("/routes", json=body, headers=_as(tenant, key))
            routes[priority] = response.json()
        assert transit(routes["express"]) < transit(routes["standard"])


async def test_the_same_key_and_body_replay_the_stored_route(
    routing: httpx.AsyncClient, tenant: str
) -> None:
    first = await routing.post("/routes", json=_body(), headers=_as(tenant, "once"))
    # The same request spelled differently is the same request.
    reordered = dict(reversed(list(_body().items())))
    replay = await routing.post("/routes", json=reordered, headers=_as(tenant, "once"))
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(await _routes_of(routing, tenant, "SHP-000001")) == 1

    # Keys are per tenant: another tenant's "once" is a route of its own.
    other = await routing.post("/routes", json=_body(), headers=_as(f"{tenant}-b", "once"))
    assert other.status_code == 201
    assert other.json()["route_id"] != first.json()["route_id"]


async def test_the_same_key_with_another_body_is_a_conflict(
    routing: httpx.AsyncClient, tenant: str
) -> None:
    await routing.post("/routes", json=_body(), headers=_as(tenant, "k"))
    changed = await routing.post(
        "/routes", json=_body(priority="express"), headers=_as(tenant, "k")
    )
    assert (changed.status_code, _code(changed)) == (409, "idempotency_conflict")
    assert len(await _routes_of(routing, tenant, "SHP-000001")) == 1


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(_body(), {"X-Tenant-Id": "demo"}, id="no idempotency key"),
        pytest.param(_body(), {"X-Tenant-Id": "demo", "Idempotency-Key": "k" * 256}, id="long key"),
        pytest.param(_body(), {"Idempotency-Key": "k"}, id="no tenant"),
        pytest.param(_body(colour="red"), _as("demo", "k"), id="unknown field"),
        pytest.param(
            _body(destination={"country": "DE", "postal_code": "1", "city": "B", "street": "x"}),
            _as("demo", "k"),
            id="unknown destination field",
        ),
        pytest.param(
            _body(destination={"country": "de", "postal_code": "1", "city": "B"}),
            _as("demo", "k"),
            id="lowercase country",
        ),
        pytest.param(_body(destination=None), _as("demo", "k"), id="no destination"),
        pytest.param(_body(shipment_id=""), _as("demo", "k"), id="empty shipment id"),
        pytest.param(_body(order_id=7), _as("demo", "k"), id="order id not a string"),
        pytest.param(_body(event_type="e" * 65), _as("demo", "k"), id="long event type"),
        pytest.param(_body(priority="overnight"), _as("demo", "k"), id="unknown priority"),
        pytest.param([_body()], _as("demo", "k"), id="not an object"),
    ],
)
async def test_malformed_route_requests_are_refused(
    routing: httpx.AsyncClient, body: Any, headers: dict[str, str]
) -> None:
    response = await routing.post("/routes", json=body, headers=headers)
    assert (response.status_code, _code(response)) == (400, "bad_request")


async def test_a_route_is_read_by_its_tenant_only(routing: httpx.AsyncClient, tenant: str) -> None:
    route = (await routing.post("/routes", json=_body(), headers=_as(tenant, "k"))).json()
    path = f"/routes/{route['route_id']}"
    assert (await routing.get(path, headers=_as(tenant))).json() == route
    other = await routing.get(path, headers=_as(f"{tenant}-b"))
    assert (other.status_code, _code(other)) == (404, "not_found")
    unknown = await routing.get("/routes/RT-0", headers=_as(tenant))
    assert (unknown.status_code, _code(unknown)) == (404, "not_found")
    assert await _routes_of(routing, f"{tenant}-b", "SHP-000001") == []


async def test_a_shipments_routes_are_listed_oldest_first(
    routing: httpx.AsyncClient, tenant: str
) -> None:
    ids = []
    for n, status in enumerate(("picked_up", "in_transit", "out_for_delivery")):
        body = _body(status=status)
        ids.append((await routing.post("/routes", json=body, headers=_as(tenant, f"e{n}"))).json())
    await routing.post("/routes", json=_body(shipment_id="SHP-2"), headers=_as(tenant, "x"))
    listed = await _routes_of(routing, tenant, "SHP-000001")
    assert [r["route_id"] for r in listed] == [r["route_id"] for r in ids]
    missing = await routing.get("/routes", headers=_as(tenant))
    assert (missing.status_code, _code(missing)) == (400, "bad_request")


async def test_concurrent_requests_with_one_key_create_one_route(
    routing: httpx.AsyncClient, tenant: str
) -> None:
    # Latency keeps all of them in flight at once, as when a worker retries a slow call.
    await routing.put("/_admin/faults", json={"latency_ms": 200})
    responses = await asyncio.gather(
        *(routing.post("/routes", json=_body(), headers=_as(tenant, "same")) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["route_id"] for r in responses}) == 1
    assert len(await _routes_of(routing, tenant, "SHP-000001")) == 1


async def test_transient_failures_are_injectable_and_create_nothing(
    routing: httpx.AsyncClient, tenant: str
) -> None:
    await routing.put("/_admin/faults", json={"error_rate": 1, "error_status": 503})
    failed = await routing.post("/routes", json=_body(), headers=_as(tenant, "k"))
    assert (failed.status_code, _code(failed)) == (503, "injected_fault")
    await routing.delete("/_admin/faults")
    assert await _routes_of(routing, tenant, "SHP-000001") == []
    retried = await routing.post("/routes", json=_body(), headers=_as(tenant, "k"))
    assert retried.status_code == 201


def test_stub_faults_replaces_the_default_latency(tmp_path: Path) -> None:
    proc, url = start_stub("routing", tmp_path, procs.free_port(), _env('{"error_rate": 0.5}'))
    try:
        faults = httpx.get(f"{url}/_admin/faults").json()
        assert (faults["latency_ms"], faults["error_rate"]) == (0, 0.5)
    finally:
        procs.stop(proc)


async def test_by_default_every_request_takes_two_seconds_without_queueing(
    tmp_path: Path, tenant: str
) -> None:
    proc, url = start_stub("routing", tmp_path, procs.free_port(), _env(None))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/_admin/faults")).json()["latency_ms"] == 2000
            started = time.monotonic()
            one = await client.post("/routes", json=_body(), headers=_as(tenant, "one"))
            assert one.status_code == 201
            assert time.monotonic() - started >= 1.9

            started = time.monotonic()
            many = await asyncio.gather(
                *(
                    client.post("/routes", json=_body(), headers=_as(tenant, f"k{n}"))
                    for n in range(10)
                )
            )
            assert [r.status_code for r in many] == [201] * 10
            assert 1.9 <= time.monotonic() - started < 3.5
    finally:
        procs.stop(proc)
