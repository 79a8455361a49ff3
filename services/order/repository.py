"""Orders in PostgreSQL (SQLAlchemy Core on asyncpg). Every query names the tenant,
and a customer's also the owner."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by, distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import db, errors
from services.kit.cursor import TimeIdPosition
from services.kit.uow import Work
from services.order.domain import (
    Caller,
    LineItem,
    NewOrder,
    Order,
    OrderFilter,
    OrderNotFound,
    OrderStatus,
    StatusChange,
)
from services.order.schema import (
    PLACED_STATUSES,
    order_items,
    order_status_changes,
    orders,
    payments,
)


def _order(
    row: sa.Row[tuple[object, ...]], items: Sequence[LineItem], payment_status: str | None = None
) -> Order:
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
        failure_reason=m["failure_reason"],
        cancel_requested=m["cancel_requested_at"] is not None,
        payment_status=payment_status,
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
            found[r.order_id].append(
                LineItem(r.sku, r.quantity, r.unit_price_cents, r.product_id, r.name)
            )
    return found


async def _payment_statuses(
    conn: AsyncConnection, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The latest charge attempt's status per order (placed orders that have one)."""
    if not ids:
        return {}
    rows = await conn.execute(
        sa.select(payments.c.order_id, payments.c.status)
        .where(payments.c.order_id.in_(ids))
        .order_by(payments.c.order_id, payments.c.created_at.desc(), payments.c.id)
        .ext(distinct_on(payments.c.order_id))
    )
    return {r.order_id: r.status for r in rows}


async def _full(conn: AsyncConnection, rows: Sequence[sa.Row[tuple[object, ...]]]) -> list[Order]:
    ids = [r._mapping["id"] for r in rows]
    items = await _items(conn, ids)
    placed = [r._mapping["id"] for r in rows if r._mapping["status"] in PLACED_STATUSES]
    paid = await _payment_statuses(conn, placed)
    return [_order(r, items[r._mapping["id"]], paid.get(r._mapping["id"])) for r in rows]


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


def _one_statement(*, owned: bool, locked: bool) -> sa.Select[Any]:
    """One order with its lines and its latest charge's status, in one query (bound:
    `tenant`, `id`, and `owner` when `owned`); built once per variant."""
    line = sa.func.json_build_array(
        order_items.c.sku,
        order_items.c.quantity,
        order_items.c.unit_price_cents,
        order_items.c.product_id,
        order_items.c.name,
    )
    lines = (
        sa.select(sa.func.json_agg(aggregate_order_by(line, order_items.c.line_no)))
        .where(order_items.c.order_id == orders.c.id)
        .scalar_subquery()
    )
    paid = (
        sa.select(payments.c.status)
        .where(payments.c.order_id == orders.c.id)
        .order_by(payments.c.created_at.desc(), payments.c.id)
        .limit(1)
        .scalar_subquery()
    )
    query = sa.select(
        *orders.c, sa.type_coerce(lines, sa.JSON).label("lines"), paid.label("payment_status")
    ).where(orders.c.tenant_id == sa.bindparam("tenant"), orders.c.id == sa.bindparam("id"))
    if owned:
        query = query.where(orders.c.user_id == sa.bindparam("owner"))
    return query.with_for_update(of=orders) if locked else query


_ONE = {
    (owned, locked): _one_statement(owned=owned, locked=locked)
    for owned in (False, True)
    for locked in (False, True)
}


async def _one(
    conn: AsyncConnection, tenant: str, order_id: uuid.UUID, owner: str | None, *, locked: bool
) -> Order:
    params: dict[str, object] = {"tenant": tenant, "id": order_id}
    if owner is not None:
        params["owner"] = owner
    row = (await conn.execute(_ONE[owner is not None, locked], params)).first()
    if row is None:
        raise OrderNotFound()
    items = [
        LineItem(sku, quantity, price, None if product is None else uuid.UUID(product), name)
        for sku, quantity, price, product, name in row.lines or ()
    ]
    return _order(row, items, row.payment_status)


async def get(conn: AsyncConnection, caller: Caller, order_id: uuid.UUID) -> Order:
    """The order if the caller may see it; OrderNotFound also for another tenant's
    or (to a customer) another customer's order."""
    return await _one(conn, caller.tenant, order_id, caller.owner, locked=False)


async def lock(
    conn: AsyncConnection, tenant: str, order_id: uuid.UUID, *, caller: Caller | None = None
) -> Order:
    """The tenant's order, its row locked until the transaction ends (the pipeline's
    and the cancel's one writer at a time); OrderNotFound when there is none, or when
    `caller` is given and may not see it (another customer's)."""
    if caller is None:
        return await _one(conn, tenant, order_id, None, locked=True)
    return await _one(conn, caller.tenant, order_id, caller.owner, locked=True)


def placed_rows(order: Order) -> list[db.Write]:
    """The rows of a placed order (`Order.placed_new`) and its lines, written in one
    statement with the rows its placement records beside it (`transitions.placed`):
    the lines' foreign key is checked at the end of the statement, when the order
    exists."""
    rows = [
        db.Write(
            orders,
            dict(
                id=order.id,
                tenant_id=order.tenant_id,
                user_id=order.user_id,
                status=order.status.value,
                version=order.version,
                total_cents=order.total_cents,
                customer_ref=order.customer_ref,
                created_at=order.created_at,
                updated_at=order.updated_at,
            ),
        )
    ]
    rows.extend(
        db.Write(
            order_items,
            dict(
                order_id=order.id,
                line_no=n,
                sku=i.sku,
                quantity=i.quantity,
                unit_price_cents=i.unit_price_cents,
                product_id=i.product_id,
                name=i.name,
            ),
        )
        for n, i in enumerate(order.items, start=1)
    )
    return rows


async def insert_placed(
    work: Work,
    caller: Caller,
    order_id: uuid.UUID,
    customer_ref: str | None,
    lines: Sequence[LineItem],
    status: OrderStatus,
) -> Order:
    """Insert a placed order and its lines at version 1 with database time, nothing
    recorded beside it (placement writes it with its records: `placed_rows`)."""
    at = await work.now()
    order = Order.placed_new(caller.tenant, caller.user, order_id, customer_ref, lines, status, at)
    await db.write_together(work.conn, placed_rows(order))
    return order


def _save_status_statement(*, cancel_request: bool | None) -> sa.Update:
    """The compare-and-set of a placed order's move (bound: `of_tenant`, `of_id`, `from_status`,
    `from_version`, `to_status`, `to_failure_reason`), setting or clearing the cancel request
    when `cancel_request` says so; built once per variant."""
    values: dict[str, object] = {
        "status": sa.bindparam("to_status"),
        "version": orders.c.version + 1,
        "updated_at": sa.func.now(),
        "failure_reason": sa.bindparam("to_failure_reason"),
    }
    if cancel_request is not None:
        values["cancel_requested_at"] = sa.func.now() if cancel_request else None
    return (
        sa.update(orders)
        .where(
            orders.c.tenant_id == sa.bindparam("of_tenant"),
            orders.c.id == sa.bindparam("of_id"),
            orders.c.status == sa.bindparam("from_status"),
            orders.c.version == sa.bindparam("from_version"),
        )
        .values(values)
        .returning(*orders.c)
    )


_SAVE_STATUS = {flag: _save_status_statement(cancel_request=flag) for flag in (None, True, False)}


async def save_status(conn: AsyncConnection, before: Order, after: Order) -> Order:
    """Write a placed order's move as a compare-and-set on (id, status, version);
    StaleVersion when another change landed first."""
    changed = after.cancel_requested != before.cancel_requested
    statement = _SAVE_STATUS[after.cancel_requested if changed else None]
    params = {
        "of_tenant": before.tenant_id,
        "of_id": before.id,
        "from_status": before.status.value,
        "from_version": before.version,
        "to_status": after.status.value,
        "to_failure_reason": after.failure_reason,
    }
    row = (await conn.execute(statement, params)).first()
    if row is None:
        raise errors.StaleVersion()
    return _order(row, before.items, before.payment_status)


def status_change_row(
    order: Order,
    from_status: OrderStatus | None,
    actor: str,
    reason: str | None,
) -> db.Write:
    """One history row: the status the order just reached."""
    return db.Write(
        order_status_changes,
        dict(
            order_id=order.id,
            from_status=None if from_status is None else from_status.value,
            to_status=order.status.value,
            version=order.version,
            actor=actor,
            reason=reason,
        ),
    )


async def status_history(conn: AsyncConnection, order_id: uuid.UUID) -> list[StatusChange]:
    """Every status the order has had, oldest first."""
    rows = await conn.execute(
        sa.select(order_status_changes)
        .where(order_status_changes.c.order_id == order_id)
        .order_by(order_status_changes.c.id)
    )
    return [
        StatusChange(
            None if r.from_status is None else OrderStatus(r.from_status),
            OrderStatus(r.to_status),
            r.version,
            r.at,
            r.reason,
        )
        for r in rows
    ]


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
    conn: AsyncConnection,
    caller: Caller,
    limit: int,
    after: TimeIdPosition | None,
    filters: OrderFilter | None = None,
) -> list[Order]:
    """Up to `limit` of the caller's visible orders newest first, strictly after `after`,
    within the filters when given (the admin's list)."""
    query = sa.select(orders).where(_visible(caller))
    if filters is not None:
        if filters.status is not None:
            query = query.where(orders.c.status == filters.status.value)
        if filters.created_from is not None:
            query = query.where(orders.c.created_at >= filters.created_from)
        if filters.created_to is not None:
            query = query.where(orders.c.created_at < filters.created_to)
    if after is not None:
        query = query.where(sa.tuple_(orders.c.created_at, orders.c.id) < (after.ts, after.id))
    query = query.order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit)
    rows = (await conn.execute(query)).all()
    return await _full(conn, rows)
