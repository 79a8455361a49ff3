"""Committed changes as PostgreSQL notifications: what live views (WatchOrder,
WatchStock) follow.

A writer calls `notify(conn, channel, payload)` inside the transaction that makes
the change; PostgreSQL delivers it to every listener when, and only if, that
transaction commits, in commit order. A payload is small JSON (well under
PostgreSQL's 8,000-byte limit): which entity, and its new version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

ORDER_STATUS = "order_status"
STOCK_LEVEL = "stock_level"


async def notify(conn: AsyncConnection, channel: str, payload: Mapping[str, Any]) -> None:
    """Queue one notification on `channel`, sent when the caller's transaction commits."""
    await conn.execute(
        sa.select(sa.func.pg_notify(channel, json.dumps(payload, separators=(",", ":"))))
    )
