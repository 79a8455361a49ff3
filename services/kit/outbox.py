"""The transactional outbox: events written in the same transaction as the change.

A row is one event of one aggregate (an order, a product): the aggregate's
type and id, the event type (`orders.closed`), the tenant, the event
contract's proto3 JSON form as `payload`, the W3C `traceparent` of the span
that wrote it, and `seq`, the order rows were written in. The relay
(`services.kit.streams.relay`) publishes unpublished rows in `seq` order and
sets `published_at`; the partial index keeps finding them cheap however
large the table grows.

Per aggregate, `seq` order is commit order as long as the writer changes the
aggregate's own row in the same transaction (every use case does): that
row's lock makes a second writer of the same aggregate wait for the first to
commit before it takes its `seq`.

`order_id` is seed 001's column, kept for the rows of aggregate type
`order`: PostgreSQL derives it from `aggregate_id`, writers never set it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format
from google.protobuf.message import Message as Contract
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit.db import Write, metadata, write_together
from services.kit.streams.message import current_traceparent

ORDER_ID = "CASE WHEN aggregate_type = 'order' THEN aggregate_id::uuid END"  # seed 001's column

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("aggregate_type", sa.Text, nullable=False),
    sa.Column("aggregate_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("traceparent", sa.Text, nullable=False, server_default=""),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("order_id", UUID(as_uuid=True), sa.Computed(ORDER_ID, persisted=True)),
    sa.Index("ix_outbox_aggregate", "aggregate_type", "aggregate_id", "seq"),
    sa.Index("ix_outbox_unpublished", "seq", postgresql_where=sa.text("published_at IS NULL")),
)


@dataclass(frozen=True)
class Event:
    """One event to record: what it is about, and its contract (a proto message)."""

    aggregate_type: str
    aggregate_id: str
    tenant_id: str
    type: str
    contract: Contract


@dataclass(frozen=True)
class Pending:
    """An unpublished row, as the relay reads it."""

    id: uuid.UUID
    seq: int
    aggregate_type: str
    aggregate_id: str
    tenant_id: str
    event_type: str
    payload: dict[str, Any]
    traceparent: str


def contract_json(contract: Contract) -> dict[str, Any]:
    """The proto3 JSON form of an event: camelCase names, every field present."""
    return json_format.MessageToDict(contract, always_print_fields_with_no_presence=True)


class Outbox:
    """The outbox of one open transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, event: Event) -> uuid.UUID:
        """Record `event` in the caller's transaction, with the current trace; returns its id."""
        event_id = uuid.uuid4()
        await write_together(self._conn, [row(event, event_id)])
        return event_id


def row(event: Event, event_id: uuid.UUID | None = None) -> Write:
    """The row that records `event` with the current trace (`Outbox.add` runs it; a
    writer batching several rows into one statement uses it with `db.write_together`)."""
    return Write(
        outbox,
        dict(
            id=event_id or uuid.uuid4(),
            aggregate_type=event.aggregate_type,
            aggregate_id=event.aggregate_id,
            event_type=event.type,
            tenant_id=event.tenant_id,
            payload=contract_json(event.contract),
            traceparent=current_traceparent(),
        ),
    )


async def pending(
    conn: AsyncConnection, aggregate_types: Collection[str], limit: int
) -> list[Pending]:
    """The oldest unpublished rows of these aggregate types, in `seq` order."""
    result = await conn.execute(
        sa.select(
            outbox.c.id,
            outbox.c.seq,
            outbox.c.aggregate_type,
            outbox.c.aggregate_id,
            outbox.c.tenant_id,
            outbox.c.event_type,
            outbox.c.payload,
            outbox.c.traceparent,
        )
        .where(outbox.c.published_at.is_(None), outbox.c.aggregate_type.in_(aggregate_types))
        .order_by(outbox.c.seq)
        .limit(limit)
    )
    return [Pending(**row._mapping) for row in result]


async def lag_seconds(conn: AsyncConnection, aggregate_types: Collection[str]) -> dict[str, float]:
    """Per aggregate type, the age of its oldest unpublished row (0 when none waits)."""
    age = sa.func.extract("epoch", sa.func.now() - sa.func.min(outbox.c.created_at))
    result = await conn.execute(
        sa.select(outbox.c.aggregate_type, age)
        .where(outbox.c.published_at.is_(None), outbox.c.aggregate_type.in_(aggregate_types))
        .group_by(outbox.c.aggregate_type)
    )
    lags = dict.fromkeys(aggregate_types, 0.0)
    lags.update({kind: max(float(seconds), 0.0) for kind, seconds in result.all()})
    return lags


async def mark_published(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> None:
    """Set `published_at` on these rows."""
    if ids:
        await conn.execute(
            sa.update(outbox).where(outbox.c.id.in_(ids)).values(published_at=sa.func.now())
        )
