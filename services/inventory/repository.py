"""The stock ledger in PostgreSQL: stock rows, reservations and their lines.

Every statement names the tenant. Every write of a stock row here also queues
its committed-change notification (kit.changes, STOCK_LEVEL), which WatchStock
follows: reserve, release, commit, restock, sync and the reaper all write
through these functions. Stock moves only through conditional
updates (`... WHERE available >= n`) and the CHECK keeps both counts at or
above zero, so no interleaving of callers can oversell. Rows of several
products are always changed in (tenant, product id) order, so two
transactions that touch the same products never wait on each other in a cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable

from services.inventory.domain import Line, Reservation, ReservationStatus, StockLevel
from services.kit import changes, db
from services.kit.db import metadata

stock = sa.Table(
    "stock",
    metadata,
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("product_id", UUID(as_uuid=True), nullable=False),
    sa.Column("available", sa.Integer, nullable=False),
    sa.Column("reserved", sa.Integer, nullable=False),
    sa.Column("low_stock_threshold", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "product_id"),
    sa.CheckConstraint("available >= 0 AND reserved >= 0", name="non_negative"),
    sa.CheckConstraint("low_stock_threshold >= 0", name="threshold"),
    sa.CheckConstraint("version >= 1", name="version"),
)

reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("id", UUID(as_uuid=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.CheckConstraint("status IN ('reserved', 'released', 'committed')", name="status"),
    # The reaper's scan: live reservations by expiry.
    sa.Index(
        "ix_reservations_live_expiry",
        "expires_at",
        postgresql_where=sa.text("status = 'reserved'"),
    ),
)

reservation_lines = sa.Table(
    "reservation_lines",
    metadata,
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("reservation_id", UUID(as_uuid=True), nullable=False),
    sa.Column("product_id", UUID(as_uuid=True), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "reservation_id", "product_id"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "reservation_id"],
        ["reservations.tenant_id", "reservations.id"],
        ondelete="CASCADE",
    ),
    sa.CheckConstraint("quantity > 0", name="quantity"),
)


async def _changed(conn: AsyncConnection, tenant: str, product_id: uuid.UUID, version: int) -> None:
    """Tell the stock's watchers, when this transaction commits."""
    await changes.notify(
        conn,
        changes.STOCK_LEVEL,
        {"tenant": tenant, "product_id": str(product_id), "version": version},
    )


def _level(row: sa.Row[tuple[object, ...]]) -> StockLevel:
    m = row._mapping
    return StockLevel(
        tenant_id=m["tenant_id"],
        product_id=m["product_id"],
        available=m["available"],
        reserved=m["reserved"],
        low_stock_threshold=m["low_stock_threshold"],
        version=m["version"],
        updated_at=m["updated_at"],
    )


async def get_stock(
    conn: AsyncConnection, tenant: str, product_id: uuid.UUID, *, for_update: bool = False
) -> StockLevel | None:
    query = sa.select(stock).where(stock.c.tenant_id == tenant, stock.c.product_id == product_id)
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    return None if row is None else _level(row)


async def low_stock_page(
    conn: AsyncConnection, tenant: str, limit: int, after: uuid.UUID | None
) -> list[StockLevel]:
    """Up to `limit` of the tenant's low products by product id, strictly after `after`."""
    query = sa.select(stock).where(
        stock.c.tenant_id == tenant, stock.c.available <= stock.c.low_stock_threshold
    )
    if after is not None:
        query = query.where(stock.c.product_id > after)
    rows = (await conn.execute(query.order_by(stock.c.product_id).limit(limit))).all()
    return [_level(r) for r in rows]


async def set_stock(
    conn: AsyncConnection,
    tenant: str,
    product_id: uuid.UUID,
    available: int,
    threshold: int,
    before: StockLevel | None,
) -> StockLevel:
    """Write a product's available units and threshold over `before` (locked by the caller)."""
    query: Executable
    if before is None:
        query = (
            insert(stock)
            .values(
                tenant_id=tenant,
                product_id=product_id,
                available=available,
                reserved=0,
                low_stock_threshold=threshold,
                version=1,
                updated_at=sa.func.now(),
            )
            .returning(*stock.c)
        )
    else:
        query = (
            sa.update(stock)
            .where(stock.c.tenant_id == tenant, stock.c.product_id == product_id)
            .values(
                available=available,
                low_stock_threshold=threshold,
                version=stock.c.version + 1,
                updated_at=sa.func.now(),
            )
            .returning(*stock.c)
        )
    level = _level((await conn.execute(query)).one())
    await _changed(conn, tenant, product_id, level.version)
    return level


async def settle(
    conn: AsyncConnection, held: Iterable[tuple[str, Line]], *, back_to_available: bool
) -> None:
    """Take reserved units off the ledger: back to available (a release) or out of
    the shop (a commit). Lines of several reservations are merged and applied in
    (tenant, product) order."""
    merged: dict[tuple[str, uuid.UUID], int] = {}
    for tenant, line in held:
        key = (tenant, line.product_id)
        merged[key] = merged.get(key, 0) + line.quantity
    statement = _RELEASE_UNITS if back_to_available else _COMMIT_UNITS
    for (tenant, product_id), quantity in sorted(merged.items()):
        await conn.execute(
            statement,
            {
                "tenant": tenant,
                "product_id": product_id,
                "quantity": quantity,
                "channel": changes.STOCK_LEVEL,
            },
        )


def _settle_units(back_to_available: bool) -> sa.TextClause:
    """Take `quantity` reserved units of one stock row off (back to available, or out
    of the shop) and queue its change notification: one round trip, built once."""
    available = "available = s.available + :quantity," if back_to_available else ""
    return sa.text(
        f"""
WITH taken AS (
    UPDATE stock s
    SET {available} reserved = s.reserved - :quantity, version = s.version + 1,
        updated_at = now()
    WHERE s.tenant_id = :tenant AND s.product_id = :product_id
    RETURNING s.product_id, s.version
)
SELECT pg_notify(:channel, json_build_object(
    'tenant', CAST(:tenant AS text), 'product_id', t.product_id, 'version', t.version
)::text)
FROM taken t
"""
    )


_RELEASE_UNITS = _settle_units(True)
_COMMIT_UNITS = _settle_units(False)


def _reservation(row: sa.Row[tuple[object, ...]], lines: Sequence[Line]) -> Reservation:
    m = row._mapping
    return Reservation(
        id=m["id"],
        tenant_id=m["tenant_id"],
        status=ReservationStatus(m["status"]),
        lines=tuple(lines),
        expires_at=m["expires_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


async def _lines(conn: AsyncConnection, tenant: str, reservation_id: uuid.UUID) -> list[Line]:
    rows = await conn.execute(
        sa.select(reservation_lines.c.product_id, reservation_lines.c.quantity)
        .where(
            reservation_lines.c.tenant_id == tenant,
            reservation_lines.c.reservation_id == reservation_id,
        )
        .order_by(reservation_lines.c.product_id)
    )
    return [Line(r.product_id, r.quantity) for r in rows]


async def get_reservation(
    conn: AsyncConnection, tenant: str, reservation_id: uuid.UUID
) -> Reservation | None:
    row = (
        await conn.execute(
            sa.select(reservations).where(
                reservations.c.tenant_id == tenant, reservations.c.id == reservation_id
            )
        )
    ).first()
    if row is None:
        return None
    return _reservation(row, await _lines(conn, tenant, reservation_id))


def _live_update(assignment: str) -> sa.TextClause:
    """Compare-and-set on a live reservation, returning it with its lines (as arrays
    in product id order): one round trip, built once."""
    return sa.text(
        f"""
UPDATE reservations r
SET {assignment}, updated_at = now()
WHERE r.tenant_id = :tenant AND r.id = :id AND r.status = 'reserved'
RETURNING r.tenant_id, r.id, r.status, r.expires_at, r.created_at, r.updated_at,
    (SELECT array_agg(l.product_id ORDER BY l.product_id) FROM reservation_lines l
     WHERE l.tenant_id = r.tenant_id AND l.reservation_id = r.id) AS products,
    (SELECT array_agg(l.quantity ORDER BY l.product_id) FROM reservation_lines l
     WHERE l.tenant_id = r.tenant_id AND l.reservation_id = r.id) AS quantities
"""
    )


_MOVE = _live_update("status = :to")
_EXTEND = _live_update("expires_at = now() + make_interval(secs => CAST(:ttl AS integer))")


async def _update_live(
    conn: AsyncConnection, statement: sa.TextClause, params: dict[str, Any]
) -> Reservation | None:
    """The live reservation after `statement`; None when it is not `reserved` (missing,
    or already released or committed)."""
    row = (await conn.execute(statement, params)).first()
    if row is None:
        return None
    m = row._mapping
    lines = [Line(p, q) for p, q in zip(m["products"] or (), m["quantities"] or (), strict=True)]
    return _reservation(row, lines)


async def move(
    conn: AsyncConnection,
    tenant: str,
    reservation_id: uuid.UUID,
    to: ReservationStatus,
) -> Reservation | None:
    """Compare-and-set a live reservation to `to`; None when it is not `reserved`
    (missing, or already released or committed)."""
    return await _update_live(conn, _MOVE, {"tenant": tenant, "id": reservation_id, "to": to.value})


async def extend(
    conn: AsyncConnection, tenant: str, reservation_id: uuid.UUID, ttl_s: int
) -> Reservation | None:
    """Move a live reservation's expiry to now + `ttl_s`; None when it is not `reserved`."""
    return await _update_live(conn, _EXTEND, {"tenant": tenant, "id": reservation_id, "ttl": ttl_s})


async def lock_expired(
    conn: AsyncConnection, limit: int, now: datetime | None = None
) -> list[tuple[str, uuid.UUID]]:
    """Up to `limit` live reservations past their expiry, locked; rows another
    transaction holds (a release or commit in flight, another reaper) are skipped."""
    moment = sa.func.now() if now is None else sa.literal(now)
    rows = await conn.execute(
        sa.select(reservations.c.tenant_id, reservations.c.id)
        .where(
            db.is_one_of(reservations.c.status, ReservationStatus.RESERVED.value),
            reservations.c.expires_at < moment,
        )
        .order_by(reservations.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [(r.tenant_id, r.id) for r in rows]


async def sync_on_hand(
    conn: AsyncConnection, tenant: str, product_id: uuid.UUID, on_hand: int, threshold: int
) -> tuple[StockLevel | None, StockLevel | None]:
    """Make available + reserved equal the warehouse's on-hand units (available
    never below zero), creating the row with `threshold`; (before, after), after
    None when nothing changed."""
    before = await get_stock(conn, tenant, product_id, for_update=True)
    if before is None:
        return None, await set_stock(conn, tenant, product_id, on_hand, threshold, None)
    available = max(on_hand - before.reserved, 0)
    if available == before.available:
        return before, None
    after = await set_stock(conn, tenant, product_id, available, before.low_stock_threshold, before)
    return before, after


# A whole reservation as ONE statement (data-modifying CTEs, as `db.write_together`):
# the reservation row, its lines and its audit row when the id is new, then every
# line's stock row locked in product id order (the ledger's lock order) and taken
# where that many units are available, with each taken row's change notification.
# Built once: no statement construction per call. A line that is short is missing
# from the answer; the caller then rolls the whole transaction back (all or none).
# `synchronous_commit` is set off for the transaction here (see `Reservations.reserve`).
_RESERVE = sa.text(
    """
WITH wanted AS (
    SELECT w.product_id, w.quantity
    FROM unnest(CAST(:products AS uuid[]), CAST(:quantities AS integer[]))
        AS w(product_id, quantity)
), created AS (
    INSERT INTO reservations (tenant_id, id, status, expires_at, created_at, updated_at)
    VALUES (:tenant, :id, 'reserved',
            now() + make_interval(secs => CAST(:ttl AS integer)), now(), now())
    ON CONFLICT (tenant_id, id) DO NOTHING
    RETURNING tenant_id, id, status, expires_at, created_at, updated_at
), created_lines AS (
    INSERT INTO reservation_lines (tenant_id, reservation_id, product_id, quantity)
    SELECT c.tenant_id, c.id, w.product_id, w.quantity FROM created c, wanted w
), audited AS (
    INSERT INTO audit_log (tenant_id, entity_type, entity_id, action, actor, request_id,
                           before, after)
    SELECT c.tenant_id, 'reservation', CAST(c.id AS text), 'reservation.reserve',
           :actor, :request_id, NULL, CAST(CAST(:audit AS text) AS jsonb)
    FROM created c
), locked AS (
    SELECT s.product_id, w.quantity
    FROM stock s JOIN wanted w ON s.product_id = w.product_id
    WHERE s.tenant_id = :tenant AND EXISTS (SELECT 1 FROM created)
    ORDER BY s.product_id
    FOR UPDATE OF s
), taken AS (
    UPDATE stock s
    SET available = s.available - l.quantity,
        reserved = s.reserved + l.quantity,
        version = s.version + 1,
        updated_at = now()
    FROM locked l
    WHERE s.tenant_id = :tenant AND s.product_id = l.product_id
      AND s.available >= l.quantity
    RETURNING s.product_id, s.available, s.reserved, s.low_stock_threshold, s.version,
              s.updated_at
), notified AS (
    SELECT t.*, pg_notify(:channel, json_build_object(
        'tenant', CAST(:tenant AS text), 'product_id', t.product_id, 'version', t.version
    )::text) AS sent
    FROM taken t
)
SELECT c.tenant_id, c.id, c.status, c.expires_at, c.created_at, c.updated_at,
       set_config('synchronous_commit', 'off', true) AS sync_off,
       (SELECT array_agg(n.product_id ORDER BY n.product_id) FROM notified n) AS products,
       (SELECT array_agg(n.available ORDER BY n.product_id) FROM notified n) AS available,
       (SELECT array_agg(n.reserved ORDER BY n.product_id) FROM notified n) AS reserved,
       (SELECT array_agg(n.low_stock_threshold ORDER BY n.product_id) FROM notified n)
           AS thresholds,
       (SELECT array_agg(n.version ORDER BY n.product_id) FROM notified n) AS versions,
       (SELECT array_agg(n.updated_at ORDER BY n.product_id) FROM notified n) AS updated
FROM created c
"""
)


async def reserve(
    conn: AsyncConnection,
    tenant: str,
    reservation_id: uuid.UUID,
    lines: Sequence[Line],
    ttl_s: int,
    *,
    actor: str,
    request_id: str | None,
    audit_after: str,
) -> tuple[Reservation, list[StockLevel]] | None:
    """Insert a live reservation (lines, audit row) and take every line's units that
    are available, in one round trip: (the reservation, the stock rows taken, in
    product id order); None when the id is taken (nothing written). Fewer rows than
    lines: some line was short, and the caller must roll back."""
    row = (
        await conn.execute(
            _RESERVE,
            {
                "tenant": tenant,
                "id": reservation_id,
                "ttl": ttl_s,
                "products": [line.product_id for line in lines],
                "quantities": [line.quantity for line in lines],
                "actor": actor,
                "request_id": request_id,
                "audit": audit_after,
                "channel": changes.STOCK_LEVEL,
            },
        )
    ).first()
    if row is None:
        return None
    m = row._mapping
    taken = [
        StockLevel(
            tenant_id=tenant,
            product_id=product_id,
            available=available,
            reserved=reserved,
            low_stock_threshold=threshold,
            version=version,
            updated_at=updated,
        )
        for product_id, available, reserved, threshold, version, updated in zip(
            m["products"] or (),
            m["available"] or (),
            m["reserved"] or (),
            m["thresholds"] or (),
            m["versions"] or (),
            m["updated"] or (),
            strict=True,
        )
    ]
    return _reservation(row, lines), taken
