"""Settling a charge and refunding a capture: the payment row and its order move together.

Shared by the pipeline's charge step (with the provider's answer) and the
reconciler (with what the lookup by key found). Locks are taken order first,
then its payment, as by every writer; a payment already settled is left as it
is, except that a capture found for a payment given up on is given back.
"""

from __future__ import annotations

import dataclasses
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.uow import UnitOfWork, Work
from services.order import repository, transitions
from services.order.domain import Order, OrderStatus
from services.order.pipeline import payments
from services.order.pipeline.payments import Payment
from services.order.pipeline.provider import ChargeOutcome, PaymentProvider, Settled

log = logging.getLogger("shop.order.pipeline")
S = OrderStatus
ACTOR = "service:order-pipeline"
# Why a cancel waiting for a charge was carried out when the charge settled.
CANCEL_REQUESTED = "cancel requested"


class Settlement:
    """Records charges' outcomes and refunds over the database and the provider."""

    def __init__(self, engine: AsyncEngine, provider: PaymentProvider) -> None:
        self._engine = engine
        self._provider = provider

    async def settle(self, payment: Payment, outcome: ChargeOutcome) -> None:
        """Record what became of a charge, and move its order along with it."""
        lost: Payment | None = None
        unwanted: Payment | None = None
        async with UnitOfWork(self._engine) as work:
            order = await repository.lock(work.conn, payment.tenant_id, payment.order_id)
            current = await payments.lock(work.conn, payment.id)
            if current is None:
                return
            if current.status not in payments.UNSETTLED:
                if outcome.settled is Settled.CAPTURED and current.status in ("failed", "declined"):
                    lost = current  # given up on, yet captured: the money goes back
            else:
                unwanted = await _settled(work, order, current, outcome)
        if lost is not None:
            log.warning("a capture of a payment given up on", extra={"payment": str(lost.id)})
            if outcome.charge_id is not None:
                await self._provider.refund(lost.tenant_id, lost.id, outcome.charge_id)
        if unwanted is not None:
            await self.refund(unwanted)

    async def refund(self, payment: Payment) -> None:
        """Give a capture back at the provider (once per payment), then record it."""
        if payment.provider_ref is not None:
            await self._provider.refund(payment.tenant_id, payment.id, payment.provider_ref)
        async with UnitOfWork(self._engine) as work:
            order = await repository.lock(work.conn, payment.tenant_id, payment.order_id)
            current = await payments.lock(work.conn, payment.id)
            if current is None or current.status != "captured":
                return
            now = await payments.mark(work, current, "refunded", actor=ACTOR)
            if order.status is S.CANCELLED:
                order = dataclasses.replace(order, payment_status=now.status)
                await transitions.moved(work, order, order.move(S.REFUNDED), actor=ACTOR)


async def _settled(
    work: Work, order: Order, payment: Payment, outcome: ChargeOutcome
) -> Payment | None:
    """Record the outcome; the payment when it was captured for an order that no
    longer waits for money (to be refunded once this commits)."""
    match outcome.settled:
        case Settled.UNKNOWN:
            await payments.mark(work, payment, "unknown", actor=ACTOR, attempted=True)
            return None
        case Settled.CAPTURED:
            now = await payments.mark(
                work,
                payment,
                "captured",
                actor=ACTOR,
                provider_ref=outcome.charge_id,
                attempted=True,
            )
            order = dataclasses.replace(order, payment_status=now.status)
            if order.status is not S.RESERVED:
                return now  # not waiting for money any more
            paid = await transitions.moved(work, order, order.move(S.PAID), actor=ACTOR)
            if paid.cancel_requested:
                after = paid.move(S.CANCELLED)
                await transitions.moved(work, paid, after, actor=ACTOR, reason=CANCEL_REQUESTED)
            return None
        case Settled.DECLINED:
            now = await payments.mark(
                work,
                payment,
                "declined",
                actor=ACTOR,
                provider_ref=outcome.charge_id,
                decline_reason=outcome.decline_code,
                attempted=True,
            )
            reason = "payment_declined"
        case Settled.ABSENT:
            now = await payments.mark(work, payment, "failed", actor=ACTOR)
            reason = "payment_failed"
    order = dataclasses.replace(order, payment_status=now.status)
    if order.status is not S.RESERVED:
        return None
    if order.cancel_requested:
        after = order.move(S.CANCELLED)
        await transitions.moved(work, order, after, actor=ACTOR, reason=CANCEL_REQUESTED)
    else:
        after = order.move(S.FAILED, failure_reason=reason)
        await transitions.moved(work, order, after, actor=ACTOR, reason=reason)
    return None
