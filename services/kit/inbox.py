"""The inbox: which messages a consumer has applied, recorded with what they changed.

Queues deliver at least once (a relay that crashed before marking its rows
publishes them again; a worker that died before acking is reclaimed), so a
handler that writes PostgreSQL records the message id in the same
transaction as its writes:

    async with UnitOfWork(engine) as work:
        if not await work.inbox.first_time("order-pipeline", message.id):
            return
        ...  # the handler's writes

The row's primary key makes a second delivery, even a concurrent one, wait
for the first transaction: if it committed, `first_time` is False and the
handler skips; if it rolled back, the second one applies the message.
Records older than the longest redelivery window can be purged.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit.db import metadata

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("consumer", sa.Text, nullable=False),
    sa.Column("message_id", sa.Text, nullable=False),
    sa.Column(
        "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.PrimaryKeyConstraint("consumer", "message_id"),
    sa.Index(None, "processed_at"),
)


class Inbox:
    """The inbox of one open transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def first_time(self, consumer: str, message_id: str) -> bool:
        """Record that `consumer` applies `message_id`; False when it already has."""
        if not consumer or not message_id:
            raise ValueError("an inbox record needs a consumer and a message id")
        recorded = await self._conn.execute(
            insert(inbox)
            .values(consumer=consumer, message_id=message_id)
            .on_conflict_do_nothing(index_elements=["consumer", "message_id"])
            .returning(inbox.c.message_id)
        )
        return recorded.first() is not None
