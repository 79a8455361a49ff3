"""Orders for report tests, written straight into the tables at chosen times and statuses."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.order.schema import order_items, orders

PRODUCTS = {n: uuid.UUID(int=n) for n in range(1, 7)}


@dataclass(frozen=True)
class Line:
    product: int  # a key of PRODUCTS
    quantity: int
    unit_price_cents: int
    name: str = ""


@dataclass(frozen=True)
class Placed:
    at: datetime
    status: str
    total_cents: int | None
    lines: tuple[Line, ...] = ()
    user_id: str = "u-1"
    id: uuid.UUID = field(default_factory=uuid.uuid4)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def insert(engine: AsyncEngine, tenant: str, given: list[Placed]) -> list[Placed]:
    """Write the orders (each under a new id) and their lines as the order service
    stores them; returns them with their ids."""
    placed = [dataclasses.replace(p, id=uuid.uuid4()) for p in given]
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(orders),
            [
                {
                    "id": p.id,
                    "tenant_id": tenant,
                    "user_id": p.user_id,
                    "status": p.status,
                    "version": 1,
                    "total_cents": p.total_cents,
                    "created_at": p.at,
                    "updated_at": p.at,
                }
                for p in placed
            ],
        )
        lines = [
            {
                "order_id": p.id,
                "line_no": n,
                "sku": f"SKU-{line.product}",
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
                "product_id": PRODUCTS[line.product],
                "name": line.name or f"Product {line.product}",
            }
            for p in placed
            for n, line in enumerate(p.lines, start=1)
        ]
        if lines:
            await conn.execute(sa.insert(order_items), lines)
    return placed


# 2026-03-01 .. 2026-03-03: a day of every kind of status, an empty day, a day of six
# best sellers; orders just outside the range on both sides.
MARCH_1 = [
    Placed(
        utc("2026-03-01T00:00:00"),
        "paid",
        1000,
        (Line(1, 2, 300, "Old name"), Line(2, 1, 400)),
    ),
    Placed(utc("2026-03-01T12:00:00"), "fulfilled", 2001, (Line(1, 1, 2001),)),
    Placed(utc("2026-03-01T13:00:00"), "cancelled", 5000, (Line(3, 10, 500),)),
    Placed(utc("2026-03-01T14:00:00"), "pending", 700, (Line(2, 1, 700),)),
    Placed(utc("2026-03-01T15:00:00"), "draft", None),
    Placed(utc("2026-03-01T16:00:00"), "closed", 900),
    Placed(utc("2026-03-01T23:59:59.999999"), "paid", 50, (Line(4, 1, 50),)),
]
MARCH_3 = [
    Placed(
        utc("2026-03-03T10:00:00"),
        "paid",
        2100,
        tuple(Line(n, n, 100) for n in range(1, 7)),
    ),
    Placed(utc("2026-03-03T11:00:00"), "refunded", 300, (Line(6, 3, 100),)),
]
OUTSIDE = [
    Placed(utc("2026-02-28T23:59:59.999999"), "paid", 99999, (Line(5, 50, 1),)),
    Placed(utc("2026-03-04T00:00:00"), "paid", 99999, (Line(5, 50, 1),)),
]
