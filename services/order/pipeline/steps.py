"""The pipeline's steps: each one moves one placed order as far as its state allows.

A step reads the order, makes its outside call (the inventory, the provider),
then locks the order's row and checks the state again before it writes, so a
step that runs twice (a redelivery, a second pipeline, a restart after a
crash) finds the work done and writes nothing. Locks are always taken order
first, then its payment: the one lock order of every writer (the cancel too).

Failed and cancelled orders give their stock back in the steps for those
events (`failed`, `cancelled`), so every way an order fails or is cancelled
(the pipeline's own, a customer's cancel, an admin's move) releases it the
same way, once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors
from services.kit.streams import Defer
from services.kit.uow import UnitOfWork, Work
from services.order import repository, transitions
from services.order.domain import Caller, Order, OrderNotFound, OrderStatus
from services.order.pipeline import payments
from services.order.pipeline.payments import Payment
from services.order.pipeline.provider import (
    ChargeOutcome,
    ChargeRequest,
    PaymentProvider,
    Settled,
)
from services.order.pipeline.settlement import ACTOR, Settlement
from services.order.stock import Reservations

log = logging.getLogger("shop.order.pipeline")
S = OrderStatus


class Pipeline:
    """The steps, over the database, the inventory's reservations and the provider."""

    def __init__(
        self,
        engine: AsyncEngine,
        reservations: Reservations,
        provider: PaymentProvider,
        *,
        hold_s: int = 3600,
    ) -> None:
        self._engine = engine
        self._stock = reservations
        self._provider = provider
        self._hold_s = hold_s
        self._money = Settlement(engine, provider)

    async def _read(self, tenant: str, order_id: uuid.UUID) -> Order | None:
        async with db.reads(self._engine).connect() as conn:
            try:
                return await repository.get(conn, Caller(tenant, ACTOR, True), order_id)
            except OrderNotFound:
                return None

    async def _locked(
        self,
        tenant: str,
        order_id: uuid.UUID,
        change: Callable[[Work, Order], Awaitable[Order | None]],
    ) -> Order | None:
        """Run `change` on the order under its row lock, in one unit of work."""
        async with UnitOfWork(self._engine) as work:
            order = await repository.lock(work.conn, tenant, order_id)
            return await change(work, order)

    async def _fail(self, tenant: str, order_id: uuid.UUID, when: S, reason: str) -> Order | None:
        """Fail the order if it is still `when` (else it moved on: nothing to do)."""

        async def change(work: Work, order: Order) -> Order | None:
            if order.status is not when:
                return None
            after = order.move(S.FAILED, failure_reason=reason)
            return await transitions.moved(work, order, after, actor=ACTOR, reason=reason)

        return await self._locked(tenant, order_id, change)

    # orders.placed ---------------------------------------------------------------

    async def placed(self, tenant: str, order_id: uuid.UUID) -> None:
        """A new order: reserve its stock when placing could not, else charge it."""
        order = await self._read(tenant, order_id)
        if order is None:
            return
        if order.status is S.PENDING:
            await self._reserve(order)
        elif order.status is S.RESERVED:
            await self._charge(order)

    async def _reserve(self, order: Order) -> None:
        """Hold a pending order's stock: reserved, or failed when it is short.
        An unavailable inventory raises, and the queue tries again later."""
        tenant, order_id = order.tenant_id, order.id
        try:
            await self._stock.reserve(tenant, order_id, order.units())
        except errors.InsufficientStock:
            await self._fail(tenant, order_id, S.PENDING, "insufficient_stock")
            return

        async def change(work: Work, order: Order) -> Order | None:
            if order.status is not S.PENDING:
                return order
            after = order.move(S.RESERVED)
            return await transitions.moved(work, order, after, actor=ACTOR)

        now = await self._locked(tenant, order_id, change)
        if now is not None and now.status in (S.CANCELLED, S.FAILED):
            # Cancelled or failed while the stock was being reserved: give it back.
            await self._stock.release(tenant, order_id)

    # orders.reserved: the charge -------------------------------------------------

    async def charge(self, tenant: str, order_id: uuid.UUID) -> None:
        """Charge a reserved order once (`orders.reserved`)."""
        order = await self._read(tenant, order_id)
        if order is not None and order.status is S.RESERVED:
            await self._charge(order)

    async def _charge(self, order: Order) -> None:
        """Hold a reserved order's stock for the charge, write the payment row, commit
        it, then ask the provider under the row's id. A payment row still `pending`
        (its worker died before the provider answered) is sent again under the same
        key, which the provider makes one charge."""
        tenant, order_id = order.tenant_id, order.id
        async with db.reads(self._engine).connect() as conn:
            live = await payments.live_of(conn, order_id)
        if live is None:
            payment = await self._start(tenant, order_id, order)
        elif live.status == "pending":
            payment = live
        else:
            return  # `unknown` is the reconciler's to settle
        if payment is None:
            return
        try:
            outcome = await self._ask(payment)
        except errors.CircuitOpen as exc:
            # The provider is down for everyone: the row stays `pending` and the message
            # comes back to resume it under the same key (one charge, whatever was sent).
            wait_s = max(float(exc.metadata.get("retry_after_s", "0")), 1.0)
            raise Defer(wait_s, str(exc)) from exc
        await self.settle(payment, outcome)

    async def _start(self, tenant: str, order_id: uuid.UUID, order: Order) -> Payment | None:
        """The order's new payment row, committed; None when it needs none any more."""
        if order.cancel_requested:
            return None
        try:
            await self._stock.extend(tenant, order_id, self._hold_s)
        except (errors.Conflict, errors.NotFound):
            # Released (by the reaper, past its expiry) before it could be charged.
            await self._fail(tenant, order_id, S.RESERVED, "reservation_expired")
            return None
        async with UnitOfWork(self._engine) as work:
            order = await repository.lock(work.conn, tenant, order_id)
            if order.status is not S.RESERVED or order.cancel_requested:
                return None
            if await payments.live_of(work.conn, order.id) is not None:
                return None  # another delivery started it
            return await payments.insert(work, order, actor=ACTOR)

    async def _ask(self, payment: Payment) -> ChargeOutcome:
        if payment.amount_cents == 0:
            return ChargeOutcome(Settled.CAPTURED)  # nothing to take
        return await self._provider.charge(
            ChargeRequest(payment.id, payment.tenant_id, payment.order_id, payment.amount_cents)
        )

    async def settle(self, payment: Payment, outcome: ChargeOutcome) -> None:
        """Record what became of a charge, and move its order along with it."""
        await self._money.settle(payment, outcome)

    # orders.paid -----------------------------------------------------------------

    async def fulfil(self, tenant: str, order_id: uuid.UUID) -> None:
        """A paid order's units leave the shop (the reservation is committed): fulfilled.
        The commit is made under the order's row lock, so a cancel waits for it and then
        finds the order fulfilled, never a cancelled order whose stock is gone."""
        order = await self._read(tenant, order_id)
        if order is None or order.status is not S.PAID:
            return

        async def change(work: Work, order: Order) -> Order | None:
            if order.status is not S.PAID:
                return None
            try:
                await self._stock.commit(tenant, order_id)
            except (errors.Conflict, errors.NotFound):
                # The stock went back before it could be committed: the money goes back.
                after = order.move(S.CANCELLED)
                reason = "reservation_expired"
                return await transitions.moved(work, order, after, actor=ACTOR, reason=reason)
            return await transitions.moved(work, order, order.move(S.FULFILLED), actor=ACTOR)

        await self._locked(tenant, order_id, change)

    # orders.failed, orders.cancelled: compensation -------------------------------

    async def failed(self, tenant: str, order_id: uuid.UUID) -> None:
        """A failed order's stock goes back (idempotent; none was held is fine)."""
        order = await self._read(tenant, order_id)
        if order is not None and order.status is S.FAILED:
            await self._stock.release(tenant, order_id)

    async def cancelled(self, tenant: str, order_id: uuid.UUID) -> None:
        """A cancelled order's stock goes back, and a captured charge is refunded:
        the payment becomes `refunded` and the order `refunded`."""
        order = await self._read(tenant, order_id)
        if order is None or order.status is not S.CANCELLED:
            return
        if not await self._stock.release(tenant, order_id):
            log.info("nothing to release for a cancelled order", extra={"order": str(order_id)})
        async with db.reads(self._engine).connect() as conn:
            captured = [
                p for p in await payments.of_order(conn, order_id) if p.status == "captured"
            ]
        for payment in captured:
            await self.refund(payment)

    async def refund(self, payment: Payment) -> None:
        await self._money.refund(payment)
