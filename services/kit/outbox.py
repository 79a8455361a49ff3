"""The transactional outbox: events written in the same transaction as the change.

A relay (a worker) later publishes unpublished rows and sets `published_at`;
the partial index keeps finding them cheap however large the table grows.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit.db import metadata

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("order_id", UUID(as_uuid=True), nullable=False),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index(None, "order_id"),
    sa.Index(
        "ix_outbox_unpublished", "created_at", postgresql_where=sa.text("published_at IS NULL")
    ),
)


async def add_event(
    conn: AsyncConnection,
    *,
    event_type: str,
    tenant_id: str,
    order_id: uuid.UUID,
    payload: dict[str, Any],
) -> uuid.UUID:
    """Insert one event in the caller's transaction; returns its id."""
    event_id = uuid.uuid4()
    await conn.execute(
        sa.insert(outbox).values(
            id=event_id,
            event_type=event_type,
            tenant_id=tenant_id,
            order_id=order_id,
            payload=payload,
        )
    )
    return event_id
