"""The Alembic migrations against real PostgreSQL: they build exactly the tables the
services define, revision 0003 gives existing rows the owners it documents, and 0004
turns existing outbox rows into order events of the generic outbox, in their order."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.launcher import PYTHONPATH, ROOT
from services.migrations.tables import target_metadata

ALEMBIC_INI = ROOT / "services" / "migrations" / "alembic.ini"


def _alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), *args],
        env={**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": PYTHONPATH},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _differences(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), target_metadata))


async def test_autogenerate_proposes_no_change_to_the_migrated_database(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []


def test_alembic_check_sees_every_table_through_its_environment(postgres_url: str) -> None:
    # `alembic check` runs autogenerate through env.py: a table module env.py
    # does not import would show up here as a table to drop.
    result = _alembic(postgres_url, "check")
    assert result.returncode == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


@pytest.fixture
async def scratch(postgres_url: str, engine: AsyncEngine) -> AsyncIterator[str]:
    """The URL of an empty database of its own on the session's PostgreSQL."""
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    async with engine.connect() as conn:
        admin = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await admin.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    async with engine.connect() as conn:
        admin = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await admin.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def test_0003_leaves_existing_orders_to_admins_and_old_keys_to_nobody(
    scratch: str,
) -> None:
    assert _alembic(scratch, "upgrade", "0002").returncode == 0
    order_id = uuid.uuid4()
    created = db.create_engine(scratch, pool_size=1)
    try:
        async with created.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO orders (id, tenant_id, status, version, created_at, updated_at)"
                    " VALUES (:id, 'acme', 'draft', 1, now(), now())"
                ),
                {"id": order_id},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO idempotency_keys (tenant_id, key, operation, request_hash,"
                    " created_at, expires_at) VALUES ('acme', 'k', 'orders.create', 'h',"
                    " now(), now() + interval '1 hour')"
                )
            )
        upgraded = _alembic(scratch, "upgrade", "head")
        assert upgraded.returncode == 0, upgraded.stderr
        async with created.connect() as conn:
            owner = (await conn.execute(sa.text("SELECT user_id FROM orders"))).scalar_one()
            key_user = (
                await conn.execute(sa.text("SELECT user_id FROM idempotency_keys"))
            ).scalar_one()
            assert (owner, key_user) == (None, "")
            assert await conn.run_sync(_differences) == []
            # Two users' equal keys now coexist under the new primary key.
            await conn.execute(
                sa.text(
                    "INSERT INTO idempotency_keys (tenant_id, user_id, key, operation,"
                    " request_hash, created_at, expires_at) VALUES ('acme', 'u-1', 'k',"
                    " 'orders.create', 'h', now(), now() + interval '1 hour')"
                )
            )
            await conn.commit()
        downgraded = _alembic(scratch, "downgrade", "0002")
        assert downgraded.returncode == 0, downgraded.stderr
        async with created.connect() as conn:
            keys = (await conn.execute(sa.text("SELECT count(*) FROM idempotency_keys"))).scalar()
            assert keys == 1  # the oldest row per (tenant, key) survives
    finally:
        await created.dispose()


async def test_0004_makes_existing_outbox_rows_order_events_in_their_order(
    scratch: str,
) -> None:
    assert _alembic(scratch, "upgrade", "0003").returncode == 0
    older, newer = uuid.uuid4(), uuid.uuid4()
    created = db.create_engine(scratch, pool_size=1)
    try:
        async with created.begin() as conn:
            for order_id, minutes in ((newer, 1), (older, 60)):
                await conn.execute(
                    sa.text(
                        "INSERT INTO outbox (id, event_type, order_id, tenant_id, payload,"
                        " created_at) VALUES (gen_random_uuid(), 'orders.closed', :order,"
                        " 'acme', CAST(:payload AS jsonb), now() - make_interval(mins => :minutes))"
                    ),
                    {
                        "order": order_id,
                        "payload": f'{{"orderId": "{order_id}"}}',
                        "minutes": minutes,
                    },
                )
        upgraded = _alembic(scratch, "upgrade", "head")
        assert upgraded.returncode == 0, upgraded.stderr
        async with created.connect() as conn:
            assert await conn.run_sync(_differences) == []
            rows = await conn.execute(
                sa.text(
                    "SELECT aggregate_type, aggregate_id, order_id, seq, traceparent,"
                    " payload->>'orderId', published_at FROM outbox ORDER BY seq"
                )
            )
            assert [tuple(row) for row in rows] == [
                ("order", str(older), older, 1, "", str(older), None),
                ("order", str(newer), newer, 2, "", str(newer), None),
            ]
            # New rows continue the numbering; another aggregate has no order_id.
            added = await conn.execute(
                sa.text(
                    "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type,"
                    " tenant_id, payload) VALUES (gen_random_uuid(), 'product', 'p-1',"
                    " 'products.changed', 'acme', '{}') RETURNING seq, order_id"
                )
            )
            assert tuple(added.one()) == (3, None)
            await conn.commit()
        downgraded = _alembic(scratch, "downgrade", "0003")
        assert downgraded.returncode == 0, downgraded.stderr
        async with created.connect() as conn:
            orders = await conn.execute(sa.text("SELECT order_id FROM outbox ORDER BY created_at"))
            assert list(orders.scalars()) == [older, newer]  # the product event is gone
    finally:
        await created.dispose()
