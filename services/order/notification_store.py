"""Customers' notifications in PostgreSQL: one customer's keyset pages, and the
notifier's claims and outcomes (SQLAlchemy Core on asyncpg).

A claim takes due pending rows with `FOR UPDATE SKIP LOCKED`, so notifiers running
side by side never take the same row, and in the same statement counts the
attempt and pushes `next_attempt_at` one lease ahead. The claim commits before
anything is sent: while the lease runs no other notifier takes the row, and if
the claimer dies the row is due again when the lease ends. An outcome is written
only for the attempt that claimed the row (`attempts` unchanged since), so a
notifier whose lease ran out cannot overwrite a newer claim's schedule.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import db
from services.kit.cursor import TimeIdPosition
from services.order.notices import FAILED, PENDING, SENT, Notification
from services.order.schema import notifications

# Longest `last_error` kept: enough to read, never a whole upstream body.
MAX_ERROR_CHARS = 500


def _notification(row: sa.Row[tuple[object, ...]]) -> Notification:
    m = row._mapping
    return Notification(
        id=m["id"],
        tenant_id=m["tenant_id"],
        user_id=m["user_id"],
        order_id=m["order_id"],
        kind=m["kind"],
        channel=m["channel"],
        subject=m["subject"],
        body=m["body"],
        status=m["status"],
        attempts=m["attempts"],
        created_at=m["created_at"],
        sent_at=m["sent_at"],
    )


async def page(
    conn: AsyncConnection, tenant: str, user: str, limit: int, after: TimeIdPosition | None
) -> list[Notification]:
    """Up to `limit` of one user's notifications newest first, strictly after `after`."""
    n = notifications.c
    query = sa.select(notifications).where(n.tenant_id == tenant, n.user_id == user)
    if after is not None:
        query = query.where(sa.tuple_(n.created_at, n.id) < (after.ts, after.id))
    query = query.order_by(n.created_at.desc(), n.id.desc()).limit(limit)
    return [_notification(r) for r in (await conn.execute(query)).all()]


async def claim_due(conn: AsyncConnection, limit: int, lease: timedelta) -> list[Notification]:
    """Take up to `limit` due pending rows no one else holds; each comes back with this
    attempt counted and leased until now + `lease`."""
    n = notifications.c
    due = (
        sa.select(n.id)
        .where(db.is_one_of(n.status, PENDING), n.next_attempt_at <= sa.func.now())
        .order_by(n.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    claimed = (
        sa.update(notifications)
        .where(n.id == due.c.id)
        .values(
            attempts=n.attempts + 1,
            next_attempt_at=sa.func.now() + sa.literal(lease, sa.Interval()),
        )
        .returning(*notifications.c)
    )
    return [_notification(r) for r in (await conn.execute(claimed)).all()]


async def mark_sent(conn: AsyncConnection, notification_ids: Sequence[uuid.UUID]) -> int:
    """Sent, in one statement (whichever claim delivered them: the provider keeps one
    message per id); how many were still pending."""
    if not notification_ids:
        return 0
    n = notifications.c
    result = await conn.execute(
        sa.update(notifications)
        .where(n.id.in_(notification_ids), n.status == PENDING)
        .values(status=SENT, sent_at=sa.func.now(), last_error=None)
    )
    return int(result.rowcount)


async def mark_retry(
    conn: AsyncConnection, claimed: Notification, delay: timedelta, error: str
) -> bool:
    """Due again after `delay`, unless a newer claim holds the row."""
    n = notifications.c
    result = await conn.execute(
        sa.update(notifications)
        .where(n.id == claimed.id, n.status == PENDING, n.attempts == claimed.attempts)
        .values(
            next_attempt_at=sa.func.now() + sa.literal(delay, sa.Interval()),
            last_error=error[:MAX_ERROR_CHARS],
        )
    )
    return result.rowcount == 1


async def mark_failed(conn: AsyncConnection, claimed: Notification, error: str) -> bool:
    """Given up, unless a newer claim holds the row."""
    n = notifications.c
    result = await conn.execute(
        sa.update(notifications)
        .where(n.id == claimed.id, n.status == PENDING, n.attempts == claimed.attempts)
        .values(status=FAILED, last_error=error[:MAX_ERROR_CHARS])
    )
    return result.rowcount == 1


async def due_lag_seconds(conn: AsyncConnection) -> float:
    """How long the oldest due pending notification has been due (0 when none)."""
    n = notifications.c
    oldest = sa.func.min(n.next_attempt_at)
    age = sa.func.coalesce(sa.extract("epoch", sa.func.now() - oldest), 0)
    query = sa.select(age).where(
        db.is_one_of(n.status, PENDING), n.next_attempt_at <= sa.func.now()
    )
    return float((await conn.execute(query)).scalar_one())
