"""Alembic environment: async engine on DATABASE_URL, the platform's MetaData as target."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from services.kit import db, idempotency, outbox  # noqa: F401  (tables register on db.metadata)
from services.order import repository  # noqa: F401

target_metadata = db.metadata


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
