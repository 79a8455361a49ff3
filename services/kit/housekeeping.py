"""Housekeeping of the kit's tables: what has served its purpose is deleted.

Three tables grow with every write and are read only for a while:
- `idempotency_keys` past their expiry (a retry after it is a new request);
- `inbox` records older than the inbox retention: a message redelivered or
  replayed from the dead letters later than that would be applied again, so the
  retention must outlast the longest a dead letter waits for its replay;
- published `outbox` rows older than the outbox retention (kept a while for
  audits and for replaying a stream by hand). An unpublished row is never deleted.

Each sweep deletes at most `batch` rows per table (short transactions, no long
locks), and sweeps again at once while a table had more. Several processes may
sweep one database: the deletes are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit.backoff import pause
from services.kit.config import ConfigError
from services.kit.idempotency import idempotency_keys
from services.kit.inbox import inbox
from services.kit.outbox import outbox

log = logging.getLogger("shop.housekeeping")


@dataclass(frozen=True)
class HousekeepingConfig:
    """How often to sweep, how long records stay, and how many rows one delete takes."""

    interval_s: float = 300.0
    inbox_retention: timedelta = timedelta(days=30)
    outbox_retention: timedelta = timedelta(days=7)
    batch: int = 1000

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.batch < 1:
            raise ConfigError("housekeeping needs a positive interval and batch")
        if self.inbox_retention <= timedelta(0) or self.outbox_retention <= timedelta(0):
            raise ConfigError("housekeeping retentions must be positive")


@dataclass(frozen=True)
class Swept:
    """Rows one sweep deleted, per table."""

    idempotency_keys: int
    inbox: int
    outbox: int

    @property
    def total(self) -> int:
        return self.idempotency_keys + self.inbox + self.outbox


async def _delete_some(
    conn: AsyncConnection, table: sa.Table, where: sa.ColumnElement[bool], limit: int
) -> int:
    """Delete at most `limit` rows of `table` matching `where`."""
    ctid: sa.ColumnClause[str] = sa.literal_column("ctid")
    chosen = sa.select(ctid).select_from(table).where(where).limit(limit).scalar_subquery()
    result = await conn.execute(sa.delete(table).where(ctid.in_(chosen)))
    return int(result.rowcount)


class Housekeeping:
    """Sweeps one database's kit tables."""

    def __init__(
        self, engine: AsyncEngine, config: HousekeepingConfig = HousekeepingConfig()
    ) -> None:
        self._engine = engine
        self.config = config

    async def sweep_once(self) -> Swept:
        """One bounded delete per table, each in its own transaction."""
        now, limit = sa.func.now(), self.config.batch
        conditions = (
            (idempotency_keys, idempotency_keys.c.expires_at <= now),
            (inbox, inbox.c.processed_at < now - self.config.inbox_retention),
            (
                outbox,
                sa.and_(
                    outbox.c.published_at.is_not(None),
                    outbox.c.published_at < now - self.config.outbox_retention,
                ),
            ),
        )
        counts = []
        for table, where in conditions:
            async with self._engine.begin() as conn:
                counts.append(await _delete_some(conn, table, where, limit))
        return Swept(*counts)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every `interval_s` until `stop` is set; a failing database is logged and
        tried again at the next interval."""
        while not stop.is_set():
            try:
                swept = await self.sweep_once()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("housekeeping failed", extra={"error": type(exc).__name__})
            else:
                if swept.total:
                    log.info(
                        "housekeeping deleted rows",
                        extra={
                            "idempotency_keys": swept.idempotency_keys,
                            "inbox": swept.inbox,
                            "outbox": swept.outbox,
                        },
                    )
                full = self.config.batch
                if full in (swept.idempotency_keys, swept.inbox, swept.outbox):
                    continue  # more to delete: go on at once
            await pause(stop, self.config.interval_s)
