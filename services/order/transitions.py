"""Every status change of a placed order goes through here, inside the caller's unit
of work, so that what one change implies commits with it or not at all:

- the compare-and-set on (id, status, version) (`repository.save_status`);
- a row of the order's status history;
- an audit row (who, before, after, request id);
- the outbox event that drives the next pipeline step (`orders.<status>`);
- the customer's notification, when the status is worth telling;
- the committed-change notification live views follow (`kit.changes`).

The order service (placement, cancel, the admin's moves) and the pipeline
worker (reserve, charge, fulfil, compensate) both call `placed` and `moved`;
nothing else writes a placed order's status.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from shop.order.events.v1 import events_pb2

from services.kit import audit, changes, db, outbox
from services.kit.outbox import Event
from services.kit.uow import Work
from services.kit.wire import timestamp
from services.order import repository
from services.order.domain import Order, OrderStatus
from services.order.events import AGGREGATE
from services.order.notices import notice_for
from services.order.schema import notifications

PLACED = "orders.placed"
CANCEL_REQUESTED = "orders.cancel_requested"


def event_type(before: Order | None, after: Order) -> str:
    """`orders.placed` for a new order, `orders.cancel_requested` for a cancel that
    waits for a charge, else `orders.<the status reached>`."""
    if before is None:
        return PLACED
    if after.status is before.status and after.cancel_requested:
        return CANCEL_REQUESTED
    return f"orders.{after.status.value}"


def snapshot(order: Order) -> dict[str, Any]:
    """What the audit log keeps of an order: its state, not its lines."""
    return {
        "status": order.status.value,
        "version": order.version,
        "total_cents": order.total_cents,
        "failure_reason": order.failure_reason,
        "cancel_requested": order.cancel_requested,
    }


async def placed(
    work: Work, order: Order, *, actor: str, with_rows: Sequence[db.Write] = ()
) -> Order:
    """Record a placed order: history, audit, event, notice, change; `with_rows` (the
    order's own inserts, the idempotent response) are written in the same statement."""
    await _recorded(work, None, order, actor=actor, reason=None, with_rows=with_rows)
    return order


async def moved(
    work: Work, before: Order, after: Order, *, actor: str, reason: str | None = None
) -> Order:
    """Save `after` over `before` (StaleVersion if the row moved meanwhile) and record it."""
    saved = await repository.save_status(work.conn, before, after)
    await _recorded(work, before, saved, actor=actor, reason=reason)
    return saved


async def _recorded(
    work: Work,
    before: Order | None,
    after: Order,
    *,
    actor: str,
    reason: str | None,
    with_rows: Sequence[db.Write] = (),
) -> None:
    """Everything the change implies, written in one statement (services.kit.db)."""
    rows: list[db.Write] = list(with_rows)
    if before is None or before.status is not after.status:
        rows.append(
            repository.status_change_row(
                after, None if before is None else before.status, actor, reason
            )
        )
    kind = event_type(before, after)
    rows.append(
        audit.row(
            tenant=after.tenant_id,
            entity_type=AGGREGATE,
            entity_id=str(after.id),
            action=kind,
            actor=actor,
            before=None if before is None else snapshot(before),
            after=snapshot(after),
        )
    )
    rows.append(
        outbox.row(
            Event(
                AGGREGATE,
                str(after.id),
                after.tenant_id,
                kind,
                events_pb2.OrderStatusChanged(
                    order_id=str(after.id),
                    tenant_id=after.tenant_id,
                    user_id=after.user_id or "",
                    from_status="" if before is None else before.status.value,
                    to_status=after.status.value,
                    version=after.version,
                    total_cents=after.total_cents or 0,
                    at=timestamp(after.updated_at),
                    reason=reason or after.failure_reason or "",
                    actor=actor,
                ),
            )
        )
    )
    # A notice per status reached; a pending order that gets its stock was already
    # told "received".
    tell = before is None or (
        before.status is not after.status and before.status is not OrderStatus.PENDING
    )
    notice = notice_for(after) if tell else None
    if notice is not None and after.user_id is not None:
        rows.append(
            db.Write(
                notifications,
                dict(
                    id=uuid.uuid4(),
                    tenant_id=after.tenant_id,
                    user_id=after.user_id,
                    order_id=after.id,
                    kind=notice.kind,
                    channel=notice.channel,
                    subject=notice.subject,
                    body=notice.body,
                    status="pending",
                ),
            )
        )
    await db.write_together(
        work.conn,
        rows,
        notify=changes.notification(
            changes.ORDER_STATUS,
            {"tenant": after.tenant_id, "id": str(after.id), "version": after.version},
        ),
    )
