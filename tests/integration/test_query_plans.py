"""The pipeline's polls and lookups keep their indexes as generic plans.

asyncpg prepares every statement, and after five executions PostgreSQL may plan a
prepared statement once for any parameters and keep that plan for the connection.
A poll whose partial index a parameter decides (`status = $1`) cannot use the index
in such a plan and reads the whole table on every poll; a lookup with no index for
its column does the same on every call. Here each statement is captured as the
platform sends it, prepared again with `plan_cache_mode = force_generic_plan`, and
explained, over tables holding thousands of settled rows (inserted, analysed and
rolled back in one transaction).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.inventory import repository as inventory
from services.order import notification_store
from services.order import repository as orders
from services.order.domain import Caller
from services.order.pipeline import payments

ROWS = 3000
LARGE = ("orders", "payments", "notifications", "reservations")


@pytest.fixture
async def settled(engine: AsyncEngine) -> AsyncIterator[tuple[AsyncConnection, str, uuid.UUID]]:
    """A connection in a transaction that holds ROWS settled orders, payments,
    notifications and reservations of a tenant of its own, analysed; rolled back after."""
    tenant = f"plans-{uuid.uuid4().hex[:8]}"
    async with engine.connect() as conn:
        await conn.begin()
        params = {"tenant": tenant, "rows": ROWS}
        for statement in (
            "INSERT INTO orders (id, tenant_id, user_id, status, version, total_cents,"
            " created_at, updated_at) SELECT gen_random_uuid(), :tenant, 'u' || n, 'paid', 3,"
            " 100, now(), now() FROM generate_series(1, :rows) AS n",
            "INSERT INTO payments (id, tenant_id, order_id, amount_cents, status)"
            " SELECT gen_random_uuid(), :tenant, id, 100, 'failed' FROM orders"
            " WHERE tenant_id = :tenant",
            "INSERT INTO notifications (id, tenant_id, user_id, order_id, kind, channel,"
            " subject, body, status, sent_at) SELECT gen_random_uuid(), :tenant, user_id, id,"
            " 'paid', 'email', 's', 'b', 'sent', now() FROM orders WHERE tenant_id = :tenant",
            "INSERT INTO reservations (tenant_id, id, status, expires_at, created_at,"
            " updated_at) SELECT :tenant, gen_random_uuid(), 'committed', now(), now(), now()"
            " FROM generate_series(1, :rows)",
        ):
            await conn.execute(sa.text(statement), params)
        for table in LARGE:
            await conn.execute(sa.text(f"ANALYZE {table}"))
        order_id = (
            await conn.execute(
                sa.text("SELECT id FROM orders WHERE tenant_id = :tenant LIMIT 1"), params
            )
        ).scalar_one()
        try:
            yield conn, tenant, order_id
        finally:
            await conn.rollback()


async def sent_statements(conn: AsyncConnection, call: Callable[[], Awaitable[Any]]) -> list[str]:
    """The SQL `call` sends on `conn`, as PostgreSQL receives it."""
    sent: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(conn.sync_connection, "before_cursor_execute", capture)  # type: ignore[arg-type]
    try:
        await call()
    finally:
        event.remove(conn.sync_connection, "before_cursor_execute", capture)  # type: ignore[arg-type]
    return sent


async def generic_plan(conn: AsyncConnection, statement: str) -> str:
    """The plan PostgreSQL keeps for `statement` once it plans it for any parameters."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    count = max((int(n) for n in re.findall(r"\$(\d+)", statement)), default=0)
    await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    await raw.execute(f"PREPARE shop_plan_check AS {statement}")
    try:
        args = f"({', '.join(['NULL'] * count)})" if count else ""
        rows = await raw.fetch(f"EXPLAIN EXECUTE shop_plan_check{args}")
        return "\n".join(r[0] for r in rows)
    finally:
        await raw.execute("DEALLOCATE shop_plan_check")


async def assert_indexed(conn: AsyncConnection, call: Callable[[], Awaitable[Any]]) -> None:
    statements = await sent_statements(conn, call)
    assert statements, "the call sent no statement"
    for statement in statements:
        plan = await generic_plan(conn, statement)
        scanned = [t for t in LARGE if re.search(rf"Seq Scan on {t}\b", plan)]
        assert not scanned, f"{statement}\n-- reads all of {scanned} as a generic plan:\n{plan}"


async def test_the_notifiers_claim_and_lag_use_the_due_index(
    settled: tuple[AsyncConnection, str, uuid.UUID],
) -> None:
    conn, _, _ = settled
    await assert_indexed(
        conn, lambda: notification_store.claim_due(conn, 16, timedelta(seconds=30))
    )
    await assert_indexed(conn, lambda: notification_store.due_lag_seconds(conn))


async def test_the_reconcilers_claim_uses_the_unsettled_index(
    settled: tuple[AsyncConnection, str, uuid.UUID],
) -> None:
    conn, _, _ = settled
    await assert_indexed(
        conn,
        lambda: payments.claim_unsettled(conn, pending_grace_s=30, unknown_after_s=30, limit=16),
    )


async def test_the_reaper_uses_the_live_expiry_index(
    settled: tuple[AsyncConnection, str, uuid.UUID],
) -> None:
    conn, _, _ = settled
    await assert_indexed(conn, lambda: inventory.lock_expired(conn, 16))


async def test_an_orders_payments_are_found_by_its_id(
    settled: tuple[AsyncConnection, str, uuid.UUID],
) -> None:
    conn, tenant, order_id = settled
    admin = Caller(tenant=tenant, user="admin", tenant_wide=True)
    await assert_indexed(conn, lambda: payments.live_of(conn, order_id))
    await assert_indexed(conn, lambda: payments.of_order(conn, order_id))
    await assert_indexed(conn, lambda: orders.lock(conn, tenant, order_id))
    await assert_indexed(conn, lambda: orders.get(conn, admin, order_id))
