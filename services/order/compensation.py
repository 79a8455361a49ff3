"""Cancelling a placed order, and an admin's moves: the use cases behind CancelOrder
and SetOrderStatus. Plain Python over the database; the RPCs translate.

Everything is decided under the order's row lock, the one writer at a time
with the pipeline:

- pending, or reserved with no charge under way: cancelled now (`orders.cancelled`;
  the pipeline releases the stock);
- reserved with a charge in flight (a payment `pending` or `unknown`): the cancel
  is recorded (`cancel_requested`, event `orders.cancel_requested`) and carried out
  when the charge settles: a decline cancels, a capture pays then cancels, and the
  pipeline refunds. The caller is told it was accepted for later (HTTP 202);
- paid: cancelled now, and the pipeline releases the stock and refunds;
- fulfilled, or a draft of seed 001: errors.InvalidTransition (409);
- cancelled, refunded or failed already: unchanged (a repeat is not an error).

A customer cancels only their own order: another's is "not found", like another
tenant's (the order is looked up as the caller before it is locked).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import errors
from services.kit.uow import UnitOfWork, Work
from services.order import repository, transitions
from services.order.domain import (
    ADMIN_TARGETS,
    Caller,
    Order,
    OrderStatus,
    check_reason,
)

S = OrderStatus
# Charges that may still take: a cancel waits for them to settle.
IN_FLIGHT = ("pending", "unknown")
# A repeated cancel of these changes nothing.
ENDED = frozenset({S.CANCELLED, S.REFUNDED, S.FAILED})


@dataclass(frozen=True)
class CancelOutcome:
    """The order after a cancel or an admin's move; `accepted_later` when the cancel
    waits for a charge in flight (answer 202), `changed` when anything was written."""

    order: Order
    accepted_later: bool = False
    changed: bool = True


class Committing(Protocol):
    """Commits an order's stock reservation (the inventory's Commit, idempotent)."""

    async def commit(self, tenant: str, order_id: uuid.UUID) -> None: ...


def _actor(caller: Caller, actor: str | None) -> str:
    return actor or caller.user


async def cancel_in(
    work: Work,
    caller: Caller,
    order_id: uuid.UUID,
    *,
    reason: str | None = None,
    expected_version: int | None = None,
    actor: str | None = None,
) -> CancelOutcome:
    """Cancel inside the caller's unit of work (e.g. one with an idempotency claim)."""
    check_reason(reason)
    order = await repository.lock(work.conn, caller.tenant, order_id, caller=caller)
    who = _actor(caller, actor)
    if order.status in ENDED:
        return CancelOutcome(order, accepted_later=False, changed=False)
    if not order.placed:
        raise errors.InvalidTransition(
            f"an order that is {order.status.value} cannot be cancelled",
            metadata={"status": order.status.value},
        )
    if order.status is S.RESERVED and order.payment_status in IN_FLIGHT:
        if order.cancel_requested:
            return CancelOutcome(order, accepted_later=True, changed=False)
        order.expect_version(expected_version)
        after = dataclasses.replace(order, cancel_requested=True)
        saved = await transitions.moved(work, order, after, actor=who, reason=reason)
        return CancelOutcome(saved, accepted_later=True)
    after = order.move(S.CANCELLED, expected_version)  # fulfilled: InvalidTransition
    saved = await transitions.moved(work, order, after, actor=who, reason=reason)
    return CancelOutcome(saved)


async def cancel(
    engine: AsyncEngine,
    caller: Caller,
    order_id: uuid.UUID,
    *,
    reason: str | None = None,
    expected_version: int | None = None,
    actor: str | None = None,
) -> CancelOutcome:
    """Cancel the caller's order (any of the tenant's when the caller is tenant-wide)."""
    async with UnitOfWork(engine) as work:
        return await cancel_in(
            work,
            caller,
            order_id,
            reason=reason,
            expected_version=expected_version,
            actor=actor,
        )


async def admin_move(
    engine: AsyncEngine,
    caller: Caller,
    order_id: uuid.UUID,
    to: OrderStatus,
    *,
    stock: Committing,
    reason: str | None = None,
    expected_version: int | None = None,
    actor: str | None = None,
) -> CancelOutcome:
    """An admin sets a placed order's status: `fulfilled` (a paid order: its stock is
    committed, then it is fulfilled), `cancelled` (the cancel above) or `failed` (before
    it is paid and with no charge in flight; the pipeline releases the stock). Any
    other target, or a move the machine does not allow, is errors.InvalidTransition."""
    if not caller.tenant_wide:
        raise errors.PermissionDenied("only the tenant's admins set an order's status")
    check_reason(reason)
    if to not in ADMIN_TARGETS:
        allowed = ", ".join(sorted(s.value for s in ADMIN_TARGETS))
        raise errors.InvalidTransition(
            f"an admin sets an order to one of {allowed}, not {to.value}",
            metadata={"target": to.value},
        )
    if to is S.CANCELLED:
        return await cancel(
            engine,
            caller,
            order_id,
            reason=reason,
            expected_version=expected_version,
            actor=actor,
        )
    who = _actor(caller, actor)
    if to is S.FULFILLED:
        return await _fulfil(engine, caller, order_id, stock, expected_version, who, reason)
    async with UnitOfWork(engine) as work:
        order = await repository.lock(work.conn, caller.tenant, order_id)
        if order.already(S.FAILED):
            return CancelOutcome(order, changed=False)
        if order.payment_status in IN_FLIGHT:
            raise errors.InvalidTransition(
                "a charge of this order is in flight; cancel it instead",
                metadata={"status": order.status.value},
            )
        after = order.move(S.FAILED, expected_version, failure_reason=reason or "failed_by_admin")
        return CancelOutcome(await transitions.moved(work, order, after, actor=who, reason=reason))


async def _fulfil(
    engine: AsyncEngine,
    caller: Caller,
    order_id: uuid.UUID,
    stock: Committing,
    expected_version: int | None,
    who: str,
    reason: str | None,
) -> CancelOutcome:
    # The commit is made under the row lock, as the pipeline's: a cancel waits for it.
    async with UnitOfWork(engine) as work:
        order = await repository.lock(work.conn, caller.tenant, order_id)
        if order.already(S.FULFILLED):
            return CancelOutcome(order, changed=False)  # the pipeline got there first
        after = order.move(S.FULFILLED, expected_version)  # refused before the stock moves
        await stock.commit(caller.tenant, order_id)
        return CancelOutcome(await transitions.moved(work, order, after, actor=who, reason=reason))
