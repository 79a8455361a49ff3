"""The audit log: one row per change of an order, a stock level, a reservation or a
payment, written in the same transaction as the change (`work.audit.record(...)`).

A row says who (`actor`: a user id or `service:<name>`), what (`entity_type`,
`entity_id`, `action`), the entity's JSON before and after (None for a creation
or a deletion) and the request id the change ran under, so an operator can
follow one request from the edge's access log to every row it changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import context
from services.kit.db import Write, metadata, write_together

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("entity_type", sa.Text, nullable=False),
    sa.Column("entity_id", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text, nullable=True),
    sa.Column("before", JSONB, nullable=True),
    sa.Column("after", JSONB, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_audit_log_entity", "tenant_id", "entity_type", "entity_id", "id"),
)


class Audit:
    """The audit rows of one unit of work (its connection, its transaction)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def record(
        self,
        *,
        tenant: str,
        entity_type: str,
        entity_id: str,
        action: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        actor: str | None = None,
    ) -> None:
        """Write one audit row now (inside the caller's transaction). The actor is the
        RPC's caller unless given (a worker names itself: `service:<name>`). The row goes
        through `db.write_together`, whose statement is built once, not per row."""
        written = row(
            tenant=tenant,
            entity_type=entity_type,
            entity_id=entity_id,
            action=action,
            before=before,
            after=after,
            actor=actor,
        )
        await write_together(self._conn, [written])


def current_actor(actor: str | None = None) -> str:
    """Who an audit row names: `actor` if given, else the RPC's caller, else `system`."""
    return actor or context.user_id.get() or "system"


def row(
    *,
    tenant: str,
    entity_type: str,
    entity_id: str,
    action: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    actor: str | None = None,
) -> Write:
    """One audit row (`Audit.record` runs it; `db.write_together` batches it)."""
    return Write(
        audit_log,
        dict(
            tenant_id=tenant,
            entity_type=entity_type,
            entity_id=entity_id,
            action=action,
            actor=current_actor(actor),
            request_id=context.request_id.get() or None,
            before=None if before is None else dict(before),
            after=None if after is None else dict(after),
        ),
    )
