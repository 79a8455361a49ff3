"""Orders belong to the customer who placed them (seed 004), through Envoy.

Two customers and an admin of one tenant: a customer reaches only their own
orders (anyone else's is 404, exactly like another tenant's), lists only their
own, and owns their idempotency keys; the tenant admin sees and acts on all.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.launcher.platform import State
from tests import identity
from tests.e2e.conftest import Api, assert_error

pytestmark = pytest.mark.e2e


@pytest.fixture
def ann(api: Api) -> Api:
    return api


@pytest.fixture
def bob(http: httpx.Client, tenant: str) -> Api:
    return Api.of_new_customer(http, tenant)


@pytest.fixture
def boss(http: httpx.Client, platform: State, tenant: str) -> Api:
    return Api(http, identity.admin(http, platform, tenant))


def _ids(api: Api, **params: Any) -> list[str]:
    """Every order id the caller's list shows, newest first, across pages."""
    seen: list[str] = []
    cursor = ""
    while True:
        body = api.list(limit=2, cursor=cursor, **params).json()
        seen += [o["id"] for o in body["items"]]
        cursor = body.get("nextCursor", "")
        if not cursor:
            return seen


def test_an_order_names_the_customer_who_placed_it(ann: Api) -> None:
    order = ann.draft()
    assert order["userId"] == ann.account.id
    assert ann.get(order["id"]).json()["userId"] == ann.account.id


def test_another_customers_order_is_not_found_like_another_tenants(ann: Api, bob: Api) -> None:
    draft = ann.draft()
    confirmed = ann.draft({"items": [{"sku": "MUG", "quantity": 1, "unitPriceCents": 650}]})
    assert ann.confirm(confirmed["id"], 1, None).status_code == 200

    for order in (draft, confirmed):
        get = assert_error(bob.get(order["id"]), 404, "not_found")
        assert get["message"] == "order not found"
    assert_error(bob.confirm(draft["id"], 1, 5), 404, "not_found")
    assert_error(bob.close(confirmed["id"]), 404, "not_found")
    assert_error(bob.close(confirmed["id"], 2), 404, "not_found")
    # The same answer as for an id that exists nowhere: ids leak nothing.
    assert bob.get(str(uuid.uuid4())).json()["message"] == get["message"]

    assert ann.get(draft["id"]).json()["version"] == 1
    assert ann.get(confirmed["id"]).json()["status"] == "confirmed"


def test_lists_are_disjoint_and_the_admin_sees_both(ann: Api, bob: Api, boss: Api) -> None:
    anns = [ann.draft()["id"] for _ in range(3)]
    bobs = [bob.draft()["id"] for _ in range(2)]
    assert _ids(ann) == list(reversed(anns))
    assert _ids(bob) == list(reversed(bobs))
    everything = _ids(boss)
    assert sorted(everything) == sorted(anns + bobs)
    owners = {o["id"]: o["userId"] for o in boss.list(limit=100).json()["items"]}
    assert {owners[i] for i in anns} == {ann.account.id}
    assert {owners[i] for i in bobs} == {bob.account.id}


def test_the_admin_reads_confirms_and_closes_a_customers_order(ann: Api, boss: Api) -> None:
    order = ann.draft()
    assert boss.get(order["id"]).status_code == 200
    confirmed = boss.confirm(order["id"], 1, 700)
    assert confirmed.status_code == 200, confirmed.text
    closed = boss.close(order["id"], 2)
    assert closed.status_code == 200, closed.text
    assert closed.json()["userId"] == ann.account.id  # still the customer's order
    assert ann.get(order["id"]).json()["status"] == "closed"


def test_a_customers_cursor_does_not_page_another_customers_list(ann: Api, bob: Api) -> None:
    for _ in range(2):
        ann.draft()
        bob.draft()
    cursor = ann.list(limit=1).json()["nextCursor"]
    assert_error(bob.list(limit=1, cursor=cursor), 400, "invalid_argument")


def test_one_idempotency_key_by_two_customers_makes_two_orders(ann: Api, bob: Api) -> None:
    body = {
        "customerRef": "same-cart",
        "items": [{"sku": "MUG", "quantity": 2, "unitPriceCents": 650}],
    }
    first = ann.create("checkout-1", body)
    second = bob.create("checkout-1", body)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["userId"] == bob.account.id

    # Each customer's retry still replays their own first response, byte for byte.
    for api, original in ((ann, first), (bob, second)):
        replay = api.create("checkout-1", body)
        assert replay.status_code == 200
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == original.json()
    # And another body under a customer's own key is still a conflict.
    assert_error(bob.create("checkout-1", {"customerRef": "other"}), 409, "conflict")
    assert len(_ids(ann)) == len(_ids(bob)) == 1


def test_a_client_cannot_claim_the_admin_role_with_headers(ann: Api, bob: Api) -> None:
    order = ann.draft()
    spoofed = {"X-User-Role": "admin", "X-User-Id": ann.account.id}
    response = bob.http.get(f"/v1/orders/{order['id']}", headers=bob.headers(**spoofed))
    assert_error(response, 404, "not_found")
    listed = bob.http.get("/v1/orders", headers=bob.headers(**spoofed)).json()
    assert listed == {"items": []}


async def test_an_order_from_before_owners_is_for_admins_only(
    ann: Api, boss: Api, engine: AsyncEngine
) -> None:
    # Migration 0003 leaves existing orders without an owner.
    order = ann.draft()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE orders SET user_id = NULL WHERE id = :id"), {"id": order["id"]}
        )
    assert_error(ann.get(order["id"]), 404, "not_found")
    assert _ids(ann) == []
    legacy = boss.get(order["id"]).json()
    assert "userId" not in legacy
    assert boss.confirm(order["id"], 1, 100).status_code == 200
