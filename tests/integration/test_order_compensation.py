"""Cancelling placed orders, an admin's moves, and pipelines that die mid-step: what the
customer, the stock ledger and the provider's ledger end up with.

`compensation.cancel` / `admin_move` are called as the order service's CancelOrder
and SetOrderStatus call them; the relay and the pipeline then do the rest.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
import pytest
import sqlalchemy as sa

from services.kit import errors
from services.kit.uow import UnitOfWork
from services.order import compensation, repository
from services.order.domain import NewOrder, OrderNotFound, OrderStatus
from services.order.pipeline import payments
from services.order.pipeline.bootstrap import bootstrap
from services.order.pipeline.reconciler import ReconcilerConfig
from services.order.stock import Reservations
from tests.pipeline import (
    PRICE,
    Shop,
    admin,
    clean_faults,
    customer,
    eventually,
    only,
    pipeline_stubs,
    shop,
)

__all__ = ["clean_faults", "pipeline_stubs", "shop"]  # the fixtures this module uses

S = OrderStatus


async def _charged(shop: Shop, tenant: str, order_id: uuid.UUID) -> None:
    """Charge an order now, by the pipeline's step, with no consumer running."""
    process = bootstrap(shop.config())
    try:
        await process.pipeline.charge(tenant, order_id)
    finally:
        await process.close()


async def test_a_cancel_before_the_charge_releases_the_stock_and_charges_nothing(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 5)
    reserved = await shop.place(tenant, {product: 2})
    pending = await shop.place(tenant, {product: 1}, reserve=False)
    first = await compensation.cancel(
        shop.engine, customer(tenant), reserved, reason="changed mind"
    )
    assert (first.order.status, first.accepted_later, first.changed) == (S.CANCELLED, False, True)
    assert (await compensation.cancel(shop.engine, customer(tenant), pending)).order.status is (
        S.CANCELLED
    )
    async with shop.running():
        await shop.eventually_level(tenant, product, (5, 0))
        await eventually(
            lambda: shop.reservation(tenant, reserved), lambda s: s == "released", what="release"
        )
        await shop.until(tenant, reserved, S.CANCELLED)
    assert await shop.statuses(reserved) == ["reserved", "cancelled"]
    assert (await shop.history(reserved))[-1].reason == "changed mind"
    assert await shop.payments(reserved) == await shop.payments(pending) == []
    assert await shop.counts(tenant, reserved) == (0, 0, 0)
    # A repeat changes nothing and is not an error.
    again = await compensation.cancel(shop.engine, customer(tenant), reserved)
    assert (again.changed, again.order.version) == (False, first.order.version)


async def test_a_cancel_during_the_charge_waits_for_it_then_refunds(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 3)
    order_id = await shop.place(tenant, {product: 3})
    await shop.faults(latency_ms=1500, tenant=tenant)  # the charge is in flight a while
    async with shop.running():
        await shop.until_paid_for(order_id, "pending")
        asked = await compensation.cancel(shop.engine, customer(tenant), order_id)
        assert (asked.accepted_later, asked.order.status, asked.order.cancel_requested) == (
            True,
            S.RESERVED,
            True,
        )
        repeat = await compensation.cancel(shop.engine, customer(tenant), order_id)
        assert (repeat.accepted_later, repeat.changed) == (True, False)
        await shop.until(tenant, order_id, S.REFUNDED)
        await shop.eventually_level(tenant, product, (3, 0))
    assert await shop.statuses(order_id) == ["reserved", "paid", "cancelled", "refunded"]
    assert only(await shop.payments(order_id)).status == "refunded"
    ledger = await shop.ledger(tenant, order_id)
    assert (ledger["captures"]["amountCents"], ledger["refunds"]["amountCents"]) == (
        3 * PRICE,
        3 * PRICE,
    )
    assert await shop.counts(tenant, order_id) == (1, 1, 0)


async def test_a_cancel_during_a_declined_charge_cancels_it(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 1)
    order_id = await shop.place(tenant, {product: 1})
    await shop.faults(latency_ms=1500, decline_rate=1, tenant=tenant)
    async with shop.running():
        await shop.until_paid_for(order_id, "pending")
        assert (await compensation.cancel(shop.engine, customer(tenant), order_id)).accepted_later
        order = await shop.until(tenant, order_id, S.CANCELLED, S.FAILED)
        await shop.eventually_level(tenant, product, (1, 0))
    assert (order.status, order.failure_reason) == (S.CANCELLED, None)
    assert only(await shop.payments(order_id)).status == "declined"
    assert await shop.counts(tenant, order_id) == (0, 0, 1)


async def test_a_cancel_after_the_charge_refunds_it(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 4)
    order_id = await shop.place(tenant, {product: 2})
    await _charged(shop, tenant, order_id)
    assert (await shop.order(tenant, order_id)).status is S.PAID
    done = await compensation.cancel(shop.engine, customer(tenant), order_id)
    assert (done.order.status, done.accepted_later) == (S.CANCELLED, False)
    async with shop.running():  # the queue still holds placed and paid: both find it cancelled
        await shop.until(tenant, order_id, S.REFUNDED)
        await shop.eventually_level(tenant, product, (4, 0))
    assert await shop.statuses(order_id) == ["reserved", "paid", "cancelled", "refunded"]
    assert await shop.counts(tenant, order_id) == (1, 1, 0)
    payment = only(await shop.payments(order_id))
    assert await shop.audit_actions(tenant, "payment", payment.id) == [
        "payments.pending",
        "payments.captured",
        "payments.refunded",
    ]


async def test_a_fulfilled_or_draft_order_cannot_be_cancelled(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 1)
    order_id = await shop.place(tenant, {product: 1})
    async with shop.running():
        fulfilled = await shop.until(tenant, order_id, S.FULFILLED)
    with pytest.raises(errors.InvalidTransition):
        await compensation.cancel(shop.engine, customer(tenant), order_id)
    with pytest.raises(errors.InvalidTransition):
        await compensation.cancel(shop.engine, admin(tenant), order_id)
    assert (await shop.order(tenant, order_id)).version == fulfilled.version
    async with UnitOfWork(shop.engine) as work:
        draft = await repository.insert(work.conn, customer(tenant), NewOrder(None, ()))
    with pytest.raises(errors.InvalidTransition):
        await compensation.cancel(shop.engine, customer(tenant), draft.id)


async def test_only_the_owner_or_an_admin_of_the_tenant_cancels(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 2)
    order_id = await shop.place(tenant, {product: 1})
    with pytest.raises(OrderNotFound):
        await compensation.cancel(shop.engine, customer(tenant, "someone-else"), order_id)
    with pytest.raises(OrderNotFound):
        await compensation.cancel(shop.engine, admin(f"{tenant}-other"), order_id)
    with pytest.raises(errors.StaleVersion):
        await compensation.cancel(shop.engine, admin(tenant), order_id, expected_version=7)
    assert (await shop.order(tenant, order_id)).status is S.RESERVED
    done = await compensation.cancel(shop.engine, admin(tenant), order_id, expected_version=1)
    assert done.order.status is S.CANCELLED


async def test_an_admin_fulfils_a_paid_order_and_fails_a_reserved_one(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 5)
    paid = await shop.place(tenant, {product: 2})
    reserved = await shop.place(tenant, {product: 3})
    await _charged(shop, tenant, paid)
    stock = Reservations(shop.channel, "order")
    with pytest.raises(errors.InvalidTransition):  # money is the pipeline's
        await compensation.admin_move(shop.engine, admin(tenant), reserved, S.PAID, stock=stock)
    with pytest.raises(errors.InvalidTransition):
        await compensation.admin_move(
            shop.engine, admin(tenant), reserved, S.FULFILLED, stock=stock
        )
    with pytest.raises(errors.PermissionDenied):
        await compensation.admin_move(shop.engine, customer(tenant), paid, S.FULFILLED, stock=stock)
    moved = await compensation.admin_move(
        shop.engine, admin(tenant), paid, S.FULFILLED, stock=stock, reason="shipped by hand"
    )
    assert moved.order.status is S.FULFILLED
    assert await shop.reservation(tenant, paid) == "committed"
    failed = await compensation.admin_move(
        shop.engine, admin(tenant), reserved, S.FAILED, stock=stock, reason="fraud_suspected"
    )
    assert (failed.order.status, failed.order.failure_reason) == (S.FAILED, "fraud_suspected")
    with pytest.raises(errors.InvalidTransition):
        await compensation.admin_move(shop.engine, admin(tenant), paid, S.CANCELLED, stock=stock)
    async with shop.running():
        await shop.eventually_level(tenant, product, (3, 0))  # the failed one's 3 are back
    assert await shop.statuses(paid) == ["reserved", "paid", "fulfilled"]
    assert await shop.counts(tenant, reserved) == (0, 0, 0)


async def test_an_admin_cancel_waits_for_a_charge_in_flight_and_a_fail_is_refused(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 1)
    order_id = await shop.place(tenant, {product: 1})
    stock = Reservations(shop.channel, "order")
    await shop.faults(latency_ms=1500, tenant=tenant)
    async with shop.running():
        await shop.until_paid_for(order_id, "pending")
        with pytest.raises(errors.InvalidTransition):
            await compensation.admin_move(
                shop.engine, admin(tenant), order_id, S.FAILED, stock=stock
            )
        later = await compensation.admin_move(
            shop.engine, admin(tenant), order_id, S.CANCELLED, stock=stock
        )
        assert later.accepted_later
        await shop.until(tenant, order_id, S.REFUNDED)
    assert await shop.counts(tenant, order_id) == (1, 1, 0)


async def test_a_payment_row_left_before_the_call_is_charged_once_on_redelivery(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 1)
    order_id = await shop.place(tenant, {product: 1})
    # A worker wrote and committed the payment row, then died before calling the provider.
    async with UnitOfWork(shop.engine) as work:
        order = await repository.lock(work.conn, tenant, order_id)
        left = await payments.insert(work, order, actor="service:order-pipeline")
    async with shop.running():
        await shop.until(tenant, order_id, S.FULFILLED)
    assert only(await shop.payments(order_id)).id == left.id
    ledger = await shop.ledger(tenant, order_id)
    assert ledger["captures"]["count"] == 1
    assert ledger["captures"]["items"][0]["idempotencyKey"] == str(left.id)


async def test_the_reconciler_settles_payments_pending_past_the_grace_period(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 2)
    never_sent = await shop.place(tenant, {product: 1})
    captured = await shop.place(tenant, {product: 1})
    rows = {}
    for order_id in (never_sent, captured):
        async with UnitOfWork(shop.engine) as work:
            order = await repository.lock(work.conn, tenant, order_id)
            rows[order_id] = await payments.insert(work, order, actor="service:order-pipeline")
    # The provider captured the second one before its worker died.
    async with httpx.AsyncClient(base_url=shop.payments_url) as client:
        answer = await client.post(
            "/v1/charges",
            json={
                "tenant": tenant,
                "orderId": str(captured),
                "amountCents": PRICE,
                "currency": "EUR",
            },
            headers={"X-Tenant-Id": tenant, "Idempotency-Key": str(rows[captured].id)},
        )
        assert answer.status_code == 201, answer.text
    # No consumer and no relay: only the reconciler looks at them.
    quick = ReconcilerConfig(interval_s=0.2, pending_grace_s=0.5, unknown_after_s=0.2, batch=10)
    async with shop.running(relay=False, reconciler=quick):
        failed = await shop.until(tenant, never_sent, S.FAILED)
        await shop.until(tenant, captured, S.PAID)
    assert failed.failure_reason == "payment_failed"
    assert only(await shop.payments(never_sent)).status == "failed"
    assert only(await shop.payments(captured)).status == "captured"
    assert await shop.counts(tenant, never_sent) == (0, 0, 0)
    assert await shop.counts(tenant, captured) == (1, 0, 0)


async def test_a_pipeline_killed_mid_charge_is_taken_over_and_charges_once(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 2)
    order_id = await shop.place(tenant, {product: 2})
    await shop.faults(latency_ms=1500, tenant=tenant)
    async with shop.running(pipelines=0):  # the relay only
        proc = shop.spawn(f"pipeline-{tenant}")
        try:
            await shop.until_paid_for(order_id, "pending", within=30)
        finally:
            shop.kill(proc)
    assert (await shop.order(tenant, order_id)).status is S.RESERVED
    # Another pipeline takes the dead one's message over after the visibility timeout.
    async with shop.running():
        await shop.until(tenant, order_id, S.FULFILLED, within=30)
    assert only(await shop.payments(order_id)).status == "captured"
    assert await shop.counts(tenant, order_id) == (1, 0, 0)
    assert await shop.level(tenant, product) == (0, 0)


async def test_cancels_racing_two_pipelines_leave_no_money_and_no_stock_held(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 30)
    orders = [await shop.place(tenant, {product: 2}) for _ in range(10)]
    await shop.faults(latency_ms=100, jitter_ms=200, tenant=tenant)
    rng = random.Random(7)

    async def cancel_later(order_id: uuid.UUID) -> compensation.CancelOutcome:
        await asyncio.sleep(rng.uniform(0, 1.0))
        return await compensation.cancel(shop.engine, customer(tenant), order_id)

    async with shop.running(pipelines=2):
        outcomes = await asyncio.gather(*(cancel_later(o) for o in orders), return_exceptions=True)
        # A cancel after fulfilment is refused; every other one is taken now or later.
        refused = [o for o, r in zip(orders, outcomes, strict=True) if isinstance(r, Exception)]
        assert all(
            isinstance(r, errors.InvalidTransition) for r in outcomes if isinstance(r, Exception)
        )
        for order_id in orders:
            await eventually(
                lambda order_id=order_id: shop.order(tenant, order_id),
                lambda o: o.terminal,
                what=f"order {order_id} to come to rest",
            )
        fulfilled = len(refused)
        await shop.eventually_level(tenant, product, (30 - 2 * fulfilled, 0))
    seen: set[S] = set()
    for order_id in orders:
        order = await shop.order(tenant, order_id)
        assert (
            order.status is S.FULFILLED if order_id in refused else order.status is not S.FULFILLED
        )
        captures, refunds, _ = await shop.counts(tenant, order_id)
        expected = {S.CANCELLED: (0, 0), S.REFUNDED: (1, 1), S.FULFILLED: (1, 0)}[order.status]
        assert (captures, refunds) == expected, (order.status, order_id)
        seen.add(order.status)
    assert len(seen) >= 2, seen  # the race went more than one way


async def test_two_reconcilers_never_take_the_same_payment(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 3)
    ids = set()
    for _ in range(3):
        order_id = await shop.place(tenant, {product: 1})
        async with UnitOfWork(shop.engine) as work:
            order = await repository.lock(work.conn, tenant, order_id)
            payment = await payments.insert(work, order, actor="service:order-pipeline")
            await payments.mark(work, payment, "unknown", actor="service:order-pipeline")
            await work.conn.execute(
                sa.text(
                    "UPDATE payments SET updated_at = now() - interval '1 minute' WHERE id = :i"
                ),
                {"i": payment.id},
            )
        ids.add(payment.id)

    def ours(found: list[payments.Payment]) -> set[uuid.UUID]:
        return {p.id for p in found} & ids

    claim = {"pending_grace_s": 30.0, "unknown_after_s": 10.0, "limit": 100}
    async with shop.engine.begin() as first:
        taken = ours(await payments.claim_unsettled(first, **claim))
        async with shop.engine.begin() as second:  # while the first holds them
            assert ours(await payments.claim_unsettled(second, **claim)) == set()
    assert taken == ids
    async with shop.engine.begin() as later:  # and after: they rest for unknown_after_s
        assert ours(await payments.claim_unsettled(later, **claim)) == set()
