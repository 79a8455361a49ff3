"""GET /v1/users/me/notifications through Envoy, with the platform's notifier running.

The notifications are written straight into the `notifications` table, as an
order change writes them, so the test does not depend on which order changes
tell the customer. The platform's notifier sends them to the notification stub
meanwhile: the list shows them `sent` once it has.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.order.schema import notifications
from tests.e2e.conftest import Api, assert_error

pytestmark = pytest.mark.e2e

PATH = "/v1/users/me/notifications"


@pytest.fixture
def bob(http: httpx.Client, tenant: str) -> Api:
    return Api.of_new_customer(http, tenant)


async def _tell(engine: AsyncEngine, api: Api, count: int) -> list[str]:
    """`count` pending notifications for the customer, a second apart; ids oldest first."""
    ids = [uuid.uuid4() for _ in range(count)]
    start = datetime.now(UTC) - timedelta(minutes=5)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(notifications),
            [
                {
                    "id": i,
                    "tenant_id": api.tenant,
                    "user_id": api.account.id,
                    "order_id": uuid.uuid4(),
                    "kind": "order.paid",
                    "channel": "email",
                    "subject": f"Order {n} paid",
                    "body": f"Your payment for order {n} went through.",
                    "status": "pending",
                    "created_at": start + timedelta(seconds=n),
                }
                for n, i in enumerate(ids)
            ],
        )
    return [str(i) for i in ids]


def _page(api: Api, **params: Any) -> dict[str, Any]:
    response = api.http.get(PATH, params=params, headers=api.headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_customer_lists_their_own_notifications_and_not_another_customers(
    api: Api, bob: Api, engine: AsyncEngine
) -> None:
    anns = await _tell(engine, api, 3)
    bobs = await _tell(engine, bob, 2)
    first = _page(api, limit=2)
    assert [n["id"] for n in first["items"]] == [anns[2], anns[1]]
    rest = _page(api, limit=2, cursor=first["nextCursor"])
    assert [n["id"] for n in rest["items"]] == [anns[0]]
    assert "nextCursor" not in rest
    assert [n["id"] for n in _page(bob)["items"]] == bobs[::-1]
    item = first["items"][0]
    assert {"id", "orderId", "kind", "channel", "subject", "body", "status", "createdAt"} <= set(
        item
    )
    assert (item["kind"], item["channel"], item["subject"]) == (
        "order.paid",
        "email",
        "Order 2 paid",
    )


async def test_the_notifier_sends_them_and_the_list_shows_it(api: Api, engine: AsyncEngine) -> None:
    ids = await _tell(engine, api, 2)
    deadline = time.monotonic() + 30
    while True:
        items = _page(api)["items"]
        if all(n["status"] == "sent" for n in items):
            break
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.2)
    assert sorted(n["id"] for n in items) == sorted(ids)
    assert all("sentAt" in n for n in items)


async def test_another_customers_cursor_is_a_400(api: Api, bob: Api, engine: AsyncEngine) -> None:
    await _tell(engine, bob, 2)
    cursor = _page(bob, limit=1)["nextCursor"]
    refused = api.http.get(PATH, params={"cursor": cursor}, headers=api.headers())
    assert_error(refused, 400, "invalid_argument")


def test_a_limit_over_100_is_a_400(api: Api) -> None:
    assert_error(
        api.http.get(PATH, params={"limit": 101}, headers=api.headers()), 400, "invalid_argument"
    )


def test_without_a_token_it_is_a_401(http: httpx.Client, tenant: str) -> None:
    assert_error(http.get(PATH, headers={"X-Tenant-Id": tenant}), 401, "unauthenticated")
