"""Orders in PostgreSQL (SQLAlchemy Core on asyncpg). Every query names the tenant,
and a customer's also the owner."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import errors
from services.kit.cursor import TimeIdPosition
from services.kit.db import metadata
from services.order.domain import (
    Caller,
    LineItem,
    NewOrder,
    Order,
    OrderNotFound,
    OrderStatus,
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    # The token's `sub` of whoever placed it; NULL on rows older than owners
    # (migration 0003), which match no customer and stay admin-only.
    sa.Column("user_id", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("total_cents", sa.Integer, nullable=True),
    sa.Column("customer_ref", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('draft', 'confirmed', 'closed')", name="status"),
    sa.CheckConstraint("version >= 1", name="version"),
    sa.CheckConstraint("total_cents IS NULL OR total_cents >= 0", name="total_cents"),
    sa.CheckConstraint("status = 'draft' OR total_cents IS NOT NULL", name="confirmed_has_total"),
    # Keyset pages: the tenant's (admins) and one owner's (customers).
    sa.Index("ix_orders_tenant_page", "tenant_id", sa.text("created_at DESC"), sa.text("id DESC")),
    sa.Index(
        "ix_orders_owner_page",
        "tenant_id",
        "user_id",
        sa.text("created_at DESC"),
        sa.text("id DESC"),
    ),
)

order_items = sa.Table(
    "order_items",
    metadata,
    sa.Column(
        "order_id",
        UUID(as_uuid=True),
        sa.ForeignKey("orders.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("line_no", sa.Integer, nullable=False),
    sa.Column("sku", sa.Text, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price_cents", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("order_id", "line_no"),
    sa.CheckConstraint("quantity > 0", name="quantity"),
    sa.CheckConstraint("unit_price_cents >= 0", name="unit_price_cents"),
)


def _order(row: sa.Row[tuple[object, ...]], items: Sequence[LineItem]) -> Order:
    m = row._mapping
    return Order(
        id=m["id"],
        tenant_id=m["tenant_id"],
        user_id=m["user_id"],
        status=OrderStatus(m["status"]),
        version=m["version"],
        total_cents=m["total_cents"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        closed_at=m["closed_at"],
        customer_ref=m["customer_ref"],
        items=tuple(items),
    )


async def _items(
    conn: AsyncConnection, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[LineItem]]:
    found: dict[uuid.UUID, list[LineItem]] = defaultdict(list)
    if ids:
        rows = await conn.execute(
            sa.select(order_items)
            .where(order_items.c.order_id.in_(ids))
            .order_by(order_items.c.order_id, order_items.c.line_no)
        )
        for r in rows:
            found[r.order_id].append(LineItem(r.sku, r.quantity, r.unit_price_cents))
    return found


def _visible(caller: Caller) -> sa.ColumnElement[bool]:
    """The orders the caller may see: the tenant's, and only their own unless tenant-wide."""
    if caller.owner is None:
        return orders.c.tenant_id == caller.tenant
    return sa.and_(orders.c.tenant_id == caller.tenant, orders.c.user_id == caller.owner)


async def insert(conn: AsyncConnection, caller: Caller, new: NewOrder) -> Order:
    """Insert the caller's draft at version 1 with database time; returns it as stored."""
    now = sa.func.now()
    row = (
        await conn.execute(
            sa.insert(orders)
            .values(
                id=uuid.uuid4(),
                tenant_id=caller.tenant,
                user_id=caller.user,
                status=OrderStatus.DRAFT.value,
                version=1,
                customer_ref=new.customer_ref,
                created_at=now,
                updated_at=now,
            )
            .returning(*orders.c)
        )
    ).one()
    if new.items:
        await conn.execute(
            sa.insert(order_items),
            [
                {
                    "order_id": row.id,
                    "line_no": n,
                    "sku": i.sku,
                    "quantity": i.quantity,
                    "unit_price_cents": i.unit_price_cents,
                }
                for n, i in enumerate(new.items, start=1)
            ],
        )
    return _order(row, new.items)


async def get(conn: AsyncConnection, caller: Caller, order_id: uuid.UUID) -> Order:
    """The order if the caller may see it; OrderNotFound also for another tenant's
    or (to a customer) another customer's order."""
    row = (
        await conn.execute(sa.select(orders).where(_visible(caller), orders.c.id == order_id))
    ).first()
    if row is None:
        raise OrderNotFound()
    return _order(row, (await _items(conn, [order_id]))[order_id])


async def save_transition(conn: AsyncConnection, before: Order, after: Order) -> Order:
    """Write `after` if the row is still at `before.version` (the optimistic lock);
    StaleVersion when another change landed between our read and this write."""
    values: dict[str, object] = {
        "status": after.status.value,
        "total_cents": after.total_cents,
        "version": orders.c.version + 1,
        "updated_at": sa.func.now(),
    }
    if after.status is OrderStatus.CLOSED:
        values["closed_at"] = sa.func.now()
    row = (
        await conn.execute(
            sa.update(orders)
            .where(
                orders.c.tenant_id == before.tenant_id,
                orders.c.id == before.id,
                orders.c.version == before.version,
            )
            .values(values)
            .returning(*orders.c)
        )
    ).first()
    if row is None:
        raise errors.StaleVersion()
    return _order(row, before.items)


async def page(
    conn: AsyncConnection, caller: Caller, limit: int, after: TimeIdPosition | None
) -> list[Order]:
    """Up to `limit` of the caller's visible orders newest first, strictly after `after`."""
    query = sa.select(orders).where(_visible(caller))
    if after is not None:
        query = query.where(sa.tuple_(orders.c.created_at, orders.c.id) < (after.ts, after.id))
    query = query.order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit)
    rows = (await conn.execute(query)).all()
    items = await _items(conn, [r.id for r in rows])
    return [_order(r, items[r.id]) for r in rows]
