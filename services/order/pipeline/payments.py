"""Charge attempts in PostgreSQL: the `payments` table, each change with its audit row.

A payment row is written (`pending`) and committed before the provider is called,
and its id is the provider's idempotency key: whatever happens after, the key is
on record, so the charge can be asked about and is never made twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import audit, db, metrics
from services.kit.uow import Work
from services.order.domain import Order
from services.order.schema import LIVE_PAYMENT_STATUSES, payments

ENTITY = "payment"
_EPOCH = datetime.fromtimestamp(0, UTC)  # a time the snapshot leaves out
UNSETTLED = ("pending", "unknown")


@dataclass(frozen=True)
class Payment:
    id: uuid.UUID
    tenant_id: str
    order_id: uuid.UUID
    amount_cents: int
    status: str
    provider_ref: str | None
    decline_reason: str | None
    attempts: int
    version: int
    created_at: datetime
    updated_at: datetime

    def snapshot(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "order_id": str(self.order_id),
            "amount_cents": self.amount_cents,
            "provider_ref": self.provider_ref,
            "decline_reason": self.decline_reason,
            "version": self.version,
        }


def _payment(row: sa.Row[Any]) -> Payment:
    m = row._mapping
    return Payment(**{name: m[name] for name in Payment.__dataclass_fields__})


# Built once: the pipeline reads and locks payments a few times per order.
_LIVE_OF = sa.select(payments).where(
    payments.c.order_id == sa.bindparam("of_order"),
    db.is_one_of(payments.c.status, *LIVE_PAYMENT_STATUSES),
)
_LOCK = sa.select(payments).where(payments.c.id == sa.bindparam("of_id")).with_for_update()


async def live_of(conn: AsyncConnection, order_id: uuid.UUID) -> Payment | None:
    """The order's charge that may still take, or has (at most one: a unique index)."""
    row = (await conn.execute(_LIVE_OF, {"of_order": order_id})).first()
    return None if row is None else _payment(row)


async def of_order(conn: AsyncConnection, order_id: uuid.UUID) -> list[Payment]:
    """Every charge attempt of an order, oldest first."""
    rows = await conn.execute(
        sa.select(payments)
        .where(payments.c.order_id == order_id)
        .order_by(payments.c.created_at, payments.c.id)
    )
    return [_payment(r) for r in rows]


async def lock(conn: AsyncConnection, payment_id: uuid.UUID) -> Payment | None:
    row = (await conn.execute(_LOCK, {"of_id": payment_id})).first()
    return None if row is None else _payment(row)


_INSERT = (
    sa.insert(payments)
    .values(
        id=sa.bindparam("new_id"),
        tenant_id=sa.bindparam("new_tenant"),
        order_id=sa.bindparam("new_order"),
        amount_cents=sa.bindparam("new_amount"),
        status="pending",
    )
    .returning(*payments.c)
)
# The caller holds the row's lock, so the row is `payment` as read: the version in the
# WHERE only makes a broken promise fail loudly (no row: `mark` raises, and the unit of
# work rolls back, the audit row with it) instead of recording a wrong audit row.
_MARK = (
    sa.update(payments)
    .where(payments.c.id == sa.bindparam("of_id"), payments.c.version == sa.bindparam("of_version"))
    .values(
        status=sa.bindparam("to_status"),
        provider_ref=sa.bindparam("to_provider_ref"),
        decline_reason=sa.bindparam("to_decline_reason"),
        attempts=sa.bindparam("to_attempts"),
        version=sa.bindparam("to_version"),
        updated_at=sa.func.now(),
    )
    .returning(*payments.c)
)


def _audit_row(payment: Payment, action: str, actor: str, before: Payment | None) -> db.Write:
    """The audit row of a change that leaves the payment as `payment`."""
    return audit.row(
        tenant=payment.tenant_id,
        entity_type=ENTITY,
        entity_id=str(payment.id),
        action=action,
        actor=actor,
        before=None if before is None else before.snapshot(),
        after=payment.snapshot(),
    )


async def insert(work: Work, order: Order, *, actor: str) -> Payment:
    """A new `pending` charge of the order's total, with its audit row (one statement)."""
    assert order.total_cents is not None
    payment_id = uuid.uuid4()
    # The row as the insert makes it, for its audit row (checked against what it made).
    expected = Payment(
        payment_id, order.tenant_id, order.id, order.total_cents, "pending", None, None, 0, 1,
        _EPOCH, _EPOCH,
    )  # fmt: skip
    params = {
        "new_id": payment_id,
        "new_tenant": order.tenant_id,
        "new_order": order.id,
        "new_amount": order.total_cents,
    }
    written = _audit_row(expected, "payments.pending", actor, None)
    (row,) = await db.change_together(work.conn, _INSERT, params, [written])
    payment = _payment(row)
    if payment.snapshot() != expected.snapshot():
        raise RuntimeError(f"payment {payment_id} was not written as its audit row says")
    metrics.PAYMENTS.labels(payment.status).inc()
    return payment


async def mark(
    work: Work,
    payment: Payment,
    status: str,
    *,
    actor: str,
    provider_ref: str | None = None,
    decline_reason: str | None = None,
    attempted: bool = False,
) -> Payment:
    """Move the payment to `status` (the caller holds its row lock), with its audit row
    (one statement)."""
    expected = replace(
        payment,
        status=status,
        provider_ref=provider_ref or payment.provider_ref,
        decline_reason=decline_reason or payment.decline_reason,
        attempts=payment.attempts + (1 if attempted else 0),
        version=payment.version + 1,
    )
    params = {
        "of_id": payment.id,
        "of_version": payment.version,
        "to_status": expected.status,
        "to_provider_ref": expected.provider_ref,
        "to_decline_reason": expected.decline_reason,
        "to_attempts": expected.attempts,
        "to_version": expected.version,
    }
    written = _audit_row(expected, f"payments.{status}", actor, payment)
    rows = await db.change_together(work.conn, _MARK, params, [written])
    if not rows:
        raise RuntimeError(f"payment {payment.id} moved without its row lock")
    after = _payment(rows[0])
    metrics.PAYMENTS.labels(status).inc()
    return after


async def claim_unsettled(
    conn: AsyncConnection, *, pending_grace_s: float, unknown_after_s: float, limit: int
) -> list[Payment]:
    """Take up to `limit` charges whose outcome is not known: `unknown` ones not looked
    at for `unknown_after_s`, and `pending` ones older than the grace period (their
    worker died between the insert and the call). Taking one touches its `updated_at`,
    so another reconciler (SKIP LOCKED meanwhile) leaves it alone for as long."""
    due = sa.or_(
        sa.and_(
            db.is_one_of(payments.c.status, "unknown"),
            payments.c.updated_at < sa.func.now() - timedelta(seconds=unknown_after_s),
        ),
        sa.and_(
            db.is_one_of(payments.c.status, "pending"),
            payments.c.updated_at < sa.func.now() - timedelta(seconds=pending_grace_s),
        ),
    )
    chosen = (
        sa.select(payments.c.id)
        .where(db.is_one_of(payments.c.status, *UNSETTLED), due)
        .order_by(payments.c.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = await conn.execute(
        sa.update(payments)
        .where(payments.c.id.in_(chosen))
        .values(updated_at=sa.func.now())
        .returning(*payments.c)
    )
    return [_payment(r) for r in rows]
