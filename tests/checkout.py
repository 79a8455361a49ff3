"""Helpers for checkout tests through the edge: a catalogue product with stock, and
placing orders for it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.audit import audit_log
from services.kit.outbox import outbox
from services.kit.uow import UnitOfWork, Work
from services.launcher.platform import State
from services.order import repository, transitions
from services.order.domain import Caller, LineItem, Order, OrderStatus


def product(
    http: httpx.Client, admin: dict[str, str], *, price_cents: int, stock: int, name: str = ""
) -> str:
    """A new catalogue product (through the product gateway) with `stock` units in the
    ledger; its id."""
    sku = f"CHK-{uuid.uuid4().hex[:10].upper()}"
    created = http.post(
        "/v1/products",
        json={"sku": sku, "name": name or f"Product {sku}", "priceCents": price_cents},
        headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert created.status_code == 201, created.text
    product_id = str(created.json()["id"])
    restocked = http.put(
        f"/v1/admin/inventory/{product_id}",
        json={"available": stock, "lowStockThreshold": 0},
        headers={**admin, "If-Match": '"0"', "Idempotency-Key": uuid.uuid4().hex},
    )
    assert restocked.status_code == 200, restocked.text
    return product_id


def order_body(*lines: tuple[str, int]) -> dict[str, Any]:
    return {"items": [{"productId": p, "quantity": n} for p, n in lines]}


def stock(http: httpx.Client, tenant: str, product_id: str) -> dict[str, Any]:
    read = http.get(f"/v1/inventory/{product_id}", headers={"X-Tenant-Id": tenant})
    assert read.status_code == 200, read.text
    return dict(read.json())


async def audit_rows(platform: State, tenant: str) -> list[dict[str, Any]]:
    """Every audit row of the tenant, oldest first (read from the platform's database)."""
    engine = db.create_engine(platform.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(audit_log).where(audit_log.c.tenant_id == tenant).order_by(audit_log.c.id)
            )
            return [dict(r._mapping) for r in rows]
    finally:
        await engine.dispose()


def wait_for_status(
    http: httpx.Client,
    headers: dict[str, str],
    order_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout_s: float = 20.0,
) -> dict[str, Any]:
    """Poll GET /v1/orders/{id} until `until(order)`; the order (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = http.get(f"/v1/orders/{order_id}", headers=headers)
        assert answer.status_code == 200, answer.text
        seen = dict(answer.json())
        if until(seen):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"order {order_id} never got there; last seen {seen}")


def settled(order: dict[str, Any]) -> bool:
    """Nothing more will happen to the order (a cancelled one only if no money moved)."""
    if order["status"] in ("fulfilled", "failed", "refunded"):
        return True
    return (
        order["status"] == "cancelled"
        and order.get("paymentStatus") in (None, "declined", "failed")
        and not order.get("cancelRequested")
    )


def payments_ledger(platform: State, tenant: str, order_id: str) -> dict[str, Any]:
    """What the Payment provider stub did for one order: captures, refunds, declines."""
    answer = httpx.get(
        f"{platform.urls['PAYMENTS_URL']}/_admin/ledger",
        params={"orderId": order_id, "tenant": tenant},
    )
    answer.raise_for_status()
    return dict(answer.json())


def wait_for_stock(
    http: httpx.Client, tenant: str, product_id: str, *, available: int, timeout_s: float = 20.0
) -> dict[str, Any]:
    """Poll the ledger until the product has `available` units; its level."""
    deadline = time.monotonic() + timeout_s
    level = stock(http, tenant, product_id)
    while level["available"] != available and time.monotonic() < deadline:
        time.sleep(0.1)
        level = stock(http, tenant, product_id)
    assert level["available"] == available, level
    return level


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON of each `data:` event of a text/event-stream response, as it arrives."""
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []


async def write_placed(
    engine: AsyncEngine, tenant: str, user: str, *, hidden_from_pipeline: bool = False
) -> Order:
    """A pending placed order of `user`, written as the order service writes one (no
    stock reserved). `hidden_from_pipeline` drops its outbox event before commit, so
    a running pipeline never hears of it and only the test moves it (live views follow
    the committed change itself, not the event)."""
    caller = Caller(tenant, user, tenant_wide=False)
    line = LineItem("LIVE-1", 2, 150, uuid.uuid4(), "Live test item")
    async with UnitOfWork(engine) as work:
        order = await repository.insert_placed(
            work, caller, uuid.uuid4(), None, [line], OrderStatus.PENDING
        )
        await transitions.placed(work, order, actor="test")
        if hidden_from_pipeline:
            await _drop_events(work, order.id)
    return order


async def write_move(
    engine: AsyncEngine,
    tenant: str,
    order_id: uuid.UUID,
    to: OrderStatus,
    *,
    hidden_from_pipeline: bool = False,
) -> Order:
    """Move an order along the machine as the pipeline would (transitions.moved)."""
    async with UnitOfWork(engine) as work:
        before = await repository.lock(work.conn, tenant, order_id)
        moved = await transitions.moved(work, before, before.move(to), actor="test")
        if hidden_from_pipeline:
            await _drop_events(work, order_id)
    return moved


async def _drop_events(work: Work, order_id: uuid.UUID) -> None:
    await work.conn.execute(sa.delete(outbox).where(outbox.c.aggregate_id == str(order_id)))
