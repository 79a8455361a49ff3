"""Alembic environment: async engine on DATABASE_URL, the platform's MetaData as target.

Every module that defines a table is imported, so that `alembic revision
--autogenerate` compares the database with all of them and never proposes
dropping a table it did not see (tests/integration/test_migrations.py holds
the migrations and the tables to each other).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from services.kit import db
from services.migrations.tables import target_metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = db.create_engine(os.environ["DATABASE_URL"], pool_size=1)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) mode is not supported; run against a database")
asyncio.run(_main())
