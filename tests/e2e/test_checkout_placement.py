"""Placing orders from the catalogue through Envoy: prices from the catalogue, stock
reserved before the order exists, never oversold, and idempotent."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from services.launcher.platform import State
from tests import checkout, identity
from tests.e2e.conftest import assert_error

pytestmark = pytest.mark.e2e


def test_an_order_takes_names_and_prices_from_the_catalogue_and_keeps_them(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyer = identity.customer(http, tenant)
    pen = checkout.product(http, admin, price_cents=250, stock=10, name="Pen")
    ink = checkout.product(http, admin, price_cents=1000, stock=10, name="Ink")

    placed = http.post(
        "/v1/orders",
        json=checkout.order_body((pen, 2), (ink, 1)),
        headers=buyer.headers(**{"Idempotency-Key": "k1"}),
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "reserved"
    assert order["userId"] == buyer.id
    assert order["totalCents"] == 2 * 250 + 1000
    assert [
        (i["productId"], i["name"], i["unitPriceCents"], i["quantity"]) for i in order["items"]
    ] == [
        (pen, "Pen", 250, 2),
        (ink, "Ink", 1000, 1),
    ]
    # The units left `available` (they are reserved, or committed once the pipeline
    # has fulfilled the order).
    assert checkout.stock(http, tenant, pen)["available"] == 8

    # A later price change does not rewrite the placed order.
    current = http.get(f"/v1/products/{pen}", headers={"X-Tenant-Id": tenant}).json()
    changed = http.put(
        f"/v1/products/{pen}",
        json={"name": "Pen", "priceCents": 999},
        headers={
            **admin,
            "If-Match": f'"{current["version"]}"',
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    assert changed.status_code == 200, changed.text
    again = http.get(f"/v1/orders/{order['id']}", headers=buyer.headers())
    assert again.status_code == 200, again.text
    assert again.json()["items"][0]["unitPriceCents"] == 250
    assert again.json()["totalCents"] == 1500

    status = http.get(f"/v1/orders/{order['id']}/status", headers=buyer.headers())
    assert status.status_code == 200, status.text
    assert status.json()["history"][0]["toStatus"] == "reserved"

    # Another customer does not see it; the admin does.
    other = identity.customer(http, tenant)
    assert_error(http.get(f"/v1/orders/{order['id']}", headers=other.headers()), 404, "not_found")
    assert_error(
        http.get(f"/v1/orders/{order['id']}/status", headers=other.headers()), 404, "not_found"
    )
    # The admin's list filters by status (once the pipeline is done with the order).
    checkout.wait_for_status(
        http, buyer.headers(), order["id"], lambda o: o["status"] == "fulfilled"
    )
    for status, listed_there in (("fulfilled", True), ("reserved", False)):
        listed = http.get("/v1/admin/orders", params={"status": status}, headers=admin)
        assert listed.status_code == 200, listed.text
        assert (order["id"] in [o["id"] for o in listed.json()["items"]]) is listed_there
    assert_error(http.get("/v1/admin/orders", headers=buyer.headers()), 403, "permission_denied")


def test_bad_placements_are_400_and_reserve_nothing(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyer = identity.customer(http, tenant)
    pen = checkout.product(http, admin, price_cents=100, stock=5)

    def place(body: dict[str, object]) -> httpx.Response:
        return http.post(
            "/v1/orders", json=body, headers=buyer.headers(**{"Idempotency-Key": uuid.uuid4().hex})
        )

    assert_error(place({"items": [{"productId": pen, "quantity": 1, "unitPriceCents": 1}]}), 400,
                 "invalid_argument")  # fmt: skip
    assert_error(place({"items": [{"productId": pen, "quantity": 1}, {"sku": "A", "quantity": 1}]}),
                 400, "invalid_argument")  # fmt: skip
    assert_error(place({"items": [{"productId": "not-a-uuid", "quantity": 1}]}), 400,
                 "invalid_argument")  # fmt: skip
    assert_error(place({"items": [{"productId": str(uuid.uuid4()), "quantity": 1}]}), 400,
                 "invalid_argument")  # fmt: skip
    assert_error(place({"items": [{"productId": pen, "quantity": 0}]}), 400, "invalid_argument")
    too_many = assert_error(place(checkout.order_body((pen, 6))), 409, "insufficient_stock")
    assert "insufficient" in too_many["message"] or pen in too_many["message"]
    assert checkout.stock(http, tenant, pen)["available"] == 5
    assert checkout.stock(http, tenant, pen)["reserved"] == 0


def test_the_same_idempotency_key_twice_reserves_once(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyer = identity.customer(http, tenant)
    pen = checkout.product(http, admin, price_cents=100, stock=5)
    headers = buyer.headers(**{"Idempotency-Key": "same"})
    first = http.post("/v1/orders", json=checkout.order_body((pen, 2)), headers=headers)
    second = http.post("/v1/orders", json=checkout.order_body((pen, 2)), headers=headers)
    assert (first.status_code, second.status_code) == (201, 200), second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert first.json()["id"] == second.json()["id"]
    assert checkout.stock(http, tenant, pen)["available"] == 3
    assert_error(
        http.post("/v1/orders", json=checkout.order_body((pen, 1)), headers=headers), 409,
        "conflict",
    )  # fmt: skip


async def _race(
    platform: State, buyers: list[identity.Account], bodies: list[dict[str, object]]
) -> list[httpx.Response]:
    """Every body placed at once (one connection each), spread over the buyers."""
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=platform.rest_url, timeout=30, limits=limits) as client:
        start = asyncio.Event()

        async def one(n: int, body: dict[str, object]) -> httpx.Response:
            await start.wait()
            headers = buyers[n % len(buyers)].headers(**{"Idempotency-Key": uuid.uuid4().hex})
            return await client.post("/v1/orders", json=body, headers=headers)

        tasks = [asyncio.create_task(one(n, b)) for n, b in enumerate(bodies)]
        await asyncio.sleep(0.2)
        start.set()
        return list(await asyncio.gather(*tasks))


def _codes(answers: list[httpx.Response]) -> list[int]:
    return sorted(a.status_code for a in answers)


def test_fifty_buyers_for_the_last_unit_one_wins(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyers = [identity.customer(http, tenant) for _ in range(5)]
    last = checkout.product(http, admin, price_cents=100, stock=1)
    answers = asyncio.run(_race(platform, buyers, [checkout.order_body((last, 1))] * 50))
    assert _codes(answers) == [201] + [409] * 49, [a.text for a in answers if a.status_code >= 500]
    for lost in (a for a in answers if a.status_code == 409):
        assert lost.json()["code"] == "insufficient_stock"
    assert checkout.stock(http, tenant, last)["available"] == 0


def test_sixty_buyers_for_seven_units_seven_win(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyers = [identity.customer(http, tenant) for _ in range(6)]
    seven = checkout.product(http, admin, price_cents=100, stock=7)
    answers = asyncio.run(_race(platform, buyers, [checkout.order_body((seven, 1))] * 60))
    assert _codes(answers) == [201] * 7 + [409] * 53
    assert checkout.stock(http, tenant, seven)["available"] == 0


def test_two_line_orders_in_opposite_order_never_deadlock(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyers = [identity.customer(http, tenant) for _ in range(4)]
    a = checkout.product(http, admin, price_cents=100, stock=1000)
    b = checkout.product(http, admin, price_cents=200, stock=1000)
    bodies = [
        checkout.order_body((a, 1), (b, 1)) if n % 2 else checkout.order_body((b, 1), (a, 1))
        for n in range(40)
    ]
    answers = asyncio.run(_race(platform, buyers, bodies))
    assert _codes(answers) == [201] * 40, [a.text for a in answers if a.status_code != 201]
    assert checkout.stock(http, tenant, a)["available"] == 960
    assert checkout.stock(http, tenant, b)["available"] == 960


def test_placement_is_in_the_audit_log_with_its_request_id(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant)
    buyer = identity.customer(http, tenant)
    pen = checkout.product(http, admin.headers(), price_cents=100, stock=5)
    request_id = f"audit-{uuid.uuid4().hex}"
    placed = http.post(
        "/v1/orders",
        json=checkout.order_body((pen, 2)),
        headers=buyer.headers(**{"Idempotency-Key": uuid.uuid4().hex, "X-Request-Id": request_id}),
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]

    rows = asyncio.run(checkout.audit_rows(platform, tenant))
    mine = [r for r in rows if r["entity_id"] in (order_id, pen)]
    by_entity = {(r["entity_type"], r["action"]): r for r in mine}
    placed_row = by_entity[("order", "orders.placed")]
    assert placed_row["actor"] == buyer.id
    assert placed_row["before"] is None
    assert placed_row["after"]["status"] == "reserved"
    reserved_row = by_entity[("reservation", "reservation.reserve")]
    assert reserved_row["actor"] == "service:order"
    assert reserved_row["after"] == {"status": "reserved", "lines": [[pen, 2]]}
    restock_row = by_entity[("stock", "stock.restock")]
    assert restock_row["actor"] == admin.id
    assert restock_row["after"]["available"] == 5
    # The edge's request id reaches every service the request touched.
    assert placed_row["request_id"] == reserved_row["request_id"] == request_id
