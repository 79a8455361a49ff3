"""Reports and export jobs in PostgreSQL: the daily aggregates, the jobs, their CSV chunks.

Every query names the tenant. The aggregates and the export's pages read
orders through `ix_orders_tenant_page` (tenant, created_at DESC, id DESC): a
range of one tenant's days is one index range, and the export's ascending
(created_at, id) keyset is that index read backwards, so no other index is needed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.order.sales import (
    REVENUE_STATUSES,
    TOP_PRODUCTS,
    DayRange,
    ExportJob,
    ExportRow,
    Position,
    ProductSales,
    StatusCount,
)
from services.order.schema import order_items, orders, report_export_chunks, report_exports

# The UTC calendar day of an order; 'UTC' inline so SELECT and GROUP BY are one expression.
_DAY = sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), orders.c.created_at), sa.Date)


@asynccontextmanager
async def snapshot(
    engine: AsyncEngine, statement_timeout_ms: int
) -> AsyncIterator[AsyncConnection]:
    """A read-only REPEATABLE READ transaction: one consistent view for every query in
    it, taking no row locks; each statement is cut off after `statement_timeout_ms`."""
    async with engine.connect() as plain:
        conn = await plain.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        async with conn.begin():
            await conn.execute(
                sa.text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": f"{int(statement_timeout_ms)}ms"},
            )
            yield conn


def _in_range(tenant: str, start: datetime, end: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        orders.c.tenant_id == tenant, orders.c.created_at >= start, orders.c.created_at < end
    )


async def status_counts(conn: AsyncConnection, tenant: str, span: DayRange) -> list[StatusCount]:
    """Orders and their totals per UTC day and status."""
    rows = await conn.execute(
        sa.select(
            _DAY.label("day"),
            orders.c.status,
            sa.func.count().label("orders"),
            sa.func.coalesce(sa.func.sum(orders.c.total_cents), 0).label("total_cents"),
        )
        .where(_in_range(tenant, span.start, span.end))
        .group_by(_DAY, orders.c.status)
    )
    return [StatusCount(r.day, r.status, int(r.orders), int(r.total_cents)) for r in rows]


# Units and revenue per product in revenue orders, per day and over the range
# (GROUPING SETS: one pass), ranked within each; the newest order's name wins.
_TOP_PRODUCTS = sa.text(
    """
    WITH sold AS (
        SELECT timezone('UTC', o.created_at)::date AS day,
               GROUPING(timezone('UTC', o.created_at)::date) AS overall,
               i.product_id,
               (array_agg(i.name ORDER BY o.created_at DESC, o.id))[1] AS name,
               sum(i.quantity) AS units,
               sum(i.quantity::bigint * i.unit_price_cents) AS revenue_cents
        FROM orders o JOIN order_items i ON i.order_id = o.id
        WHERE o.tenant_id = :tenant AND o.created_at >= :start AND o.created_at < :end
          AND o.status = ANY(:statuses) AND i.product_id IS NOT NULL
        GROUP BY GROUPING SETS ((timezone('UTC', o.created_at)::date, i.product_id),
                                (i.product_id))
    ), ranked AS (
        SELECT sold.*, row_number() OVER (
            PARTITION BY overall, day ORDER BY units DESC, revenue_cents DESC, product_id
        ) AS rank
        FROM sold
    )
    SELECT day, overall, product_id, name, units, revenue_cents
    FROM ranked WHERE rank <= :top ORDER BY overall, day, rank
    """
)


async def top_products(
    conn: AsyncConnection, tenant: str, span: DayRange
) -> tuple[dict[date, list[ProductSales]], list[ProductSales]]:
    """The best sellers by units of each day, and of the whole range."""
    rows = await conn.execute(
        _TOP_PRODUCTS,
        {
            "tenant": tenant,
            "start": span.start,
            "end": span.end,
            "statuses": list(REVENUE_STATUSES),
            "top": TOP_PRODUCTS,
        },
    )
    by_day: dict[date, list[ProductSales]] = {}
    overall: list[ProductSales] = []
    for r in rows:
        sold = ProductSales(str(r.product_id), r.name or "", int(r.units), int(r.revenue_cents))
        if r.overall:
            overall.append(sold)
        else:
            by_day.setdefault(r.day, []).append(sold)
    return by_day, overall


# --- export jobs ----------------------------------------------------------------------------


def _job(row: sa.Row[tuple[object, ...]]) -> ExportJob:
    m = row._mapping
    return ExportJob(
        id=m["id"],
        tenant_id=m["tenant_id"],
        requested_by=m["requested_by"],
        range=DayRange(m["from_day"], m["to_day"]),
        status=m["status"],
        rows_done=m["rows_done"],
        rows_total=m["rows_total"],
        position=None if m["position"] is None else Position.decode(m["position"]),
        error=m["error"],
        created_at=m["created_at"],
        finished_at=m["finished_at"],
    )


async def insert_job(conn: AsyncConnection, tenant: str, user: str, span: DayRange) -> ExportJob:
    """A new job, queued."""
    row = (
        await conn.execute(
            sa.insert(report_exports)
            .values(
                id=uuid.uuid4(),
                tenant_id=tenant,
                requested_by=user,
                from_day=span.first,
                to_day=span.last,
                status="queued",
            )
            .returning(*report_exports.c)
        )
    ).one()
    return _job(row)


async def get_job(
    conn: AsyncConnection, tenant: str, job_id: uuid.UUID, *, lock: bool = False
) -> ExportJob | None:
    """The tenant's job, or None; `lock` holds its row until the transaction ends."""
    query = sa.select(report_exports).where(
        report_exports.c.tenant_id == tenant, report_exports.c.id == job_id
    )
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    return None if row is None else _job(row)


def _until(job: ExportJob) -> datetime:
    """The end of what a job exports: its range, and nothing placed after it was asked for."""
    return min(job.range.end, job.created_at)


async def count_rows(conn: AsyncConnection, job: ExportJob) -> int:
    """How many orders the job will write."""
    query = sa.select(sa.func.count()).where(_in_range(job.tenant_id, job.range.start, _until(job)))
    return int((await conn.execute(query)).scalar_one())


async def next_rows(conn: AsyncConnection, job: ExportJob, limit: int) -> list[ExportRow]:
    """The job's next `limit` orders after its position, in (created_at, id) order."""
    page = sa.select(orders).where(_in_range(job.tenant_id, job.range.start, _until(job)))
    if job.position is not None:
        after = job.position
        page = page.where(
            sa.tuple_(orders.c.created_at, orders.c.id) > (after.created_at, after.id)
        )
    chosen = page.order_by(orders.c.created_at, orders.c.id).limit(limit).subquery()
    # Per chosen order only (its primary-key range of order_items), never the whole table.
    lines = (
        sa.select(
            sa.func.count().label("line_count"),
            sa.func.coalesce(sa.func.sum(order_items.c.quantity), 0).label("unit_count"),
        )
        .where(order_items.c.order_id == chosen.c.id)
        .lateral()
    )
    rows = await conn.execute(
        sa.select(
            chosen.c.id,
            chosen.c.created_at,
            chosen.c.status,
            chosen.c.user_id,
            chosen.c.total_cents,
            lines.c.line_count,
            lines.c.unit_count,
        )
        .select_from(chosen.join(lines, sa.true()))
        .order_by(chosen.c.created_at, chosen.c.id)
    )
    return [
        ExportRow(
            r.id,
            r.created_at,
            r.status,
            r.user_id,
            r.total_cents,
            int(r.line_count),
            int(r.unit_count),
        )
        for r in rows
    ]


async def _update(conn: AsyncConnection, job_id: uuid.UUID, **values: object) -> None:
    await conn.execute(
        sa.update(report_exports)
        .where(report_exports.c.id == job_id)
        .values(updated_at=sa.func.now(), **values)
    )


async def start(conn: AsyncConnection, job_id: uuid.UUID, rows_total: int) -> None:
    await _update(conn, job_id, status="running", rows_total=rows_total)


async def add_chunk(
    conn: AsyncConnection, job: ExportJob, body: str, rows: int, position: Position
) -> None:
    """Store one chunk of CSV and move the job's checkpoint past it."""
    seq = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(report_export_chunks.c.seq) + 1, 0)).where(
                report_export_chunks.c.export_id == job.id
            )
        )
    ).scalar_one()
    await conn.execute(sa.insert(report_export_chunks).values(export_id=job.id, seq=seq, body=body))
    await _update(conn, job.id, rows_done=job.rows_done + rows, position=position.encode())


async def finish(conn: AsyncConnection, job_id: uuid.UUID) -> None:
    """Done: every order written (the total is what was written)."""
    await _update(
        conn,
        job_id,
        status="done",
        rows_total=report_exports.c.rows_done,
        finished_at=sa.func.now(),
    )


async def fail(conn: AsyncConnection, job_id: uuid.UUID, error: str) -> None:
    await _update(conn, job_id, status="failed", error=error, finished_at=sa.func.now())


async def chunks(conn: AsyncConnection, job_id: uuid.UUID) -> Sequence[str]:
    """The job's CSV chunks in order."""
    rows = await conn.execute(
        sa.select(report_export_chunks.c.body)
        .where(report_export_chunks.c.export_id == job_id)
        .order_by(report_export_chunks.c.seq)
    )
    return [body for (body,) in rows]
