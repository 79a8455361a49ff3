"""The order pipeline end to end without the edge: the inventory server (port 0), the
Payment provider stub (a process), the relay and pipelines over real PostgreSQL and Redis.

Every assertion is on what a customer or an operator would check: the order's
status and history, the stock levels, the payment rows, and the provider's
ledger (how many captures and refunds it made for the order).
"""

from __future__ import annotations

import asyncio
import uuid

from prometheus_client import REGISTRY

from services.kit.streams import Message, Queue
from services.kit.upstream import UpstreamPolicy
from services.launcher import procs
from services.order.domain import OrderStatus
from services.order.pipeline.handlers import routes
from tests.pipeline import PRICE, Shop, clean_faults, eventually, only, pipeline_stubs, shop

__all__ = ["clean_faults", "pipeline_stubs", "shop"]  # the fixtures this module uses

S = OrderStatus


def _counted(status: str) -> float:
    """`shop_payments_total{status}` in this process."""
    return REGISTRY.get_sample_value("shop_payments_total", {"status": status}) or 0.0


async def test_a_placed_order_is_paid_once_and_fulfilled(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 10)
    order_id = await shop.place(tenant, {product: 3})
    captured = _counted("captured")
    async with shop.running():
        order = await shop.until(tenant, order_id, S.FULFILLED)
    assert _counted("captured") >= captured + 1  # (others may settle leftovers meanwhile)
    assert await shop.statuses(order_id) == ["reserved", "paid", "fulfilled"]
    payment = only(await shop.payments(order_id))
    assert (payment.status, payment.amount_cents, payment.attempts) == ("captured", 3 * PRICE, 1)
    assert order.total_cents == 3 * PRICE
    ledger = await shop.ledger(tenant, order_id)
    assert (ledger["captures"]["count"], ledger["captures"]["amountCents"]) == (1, 3 * PRICE)
    assert ledger["captures"]["items"][0]["idempotencyKey"] == str(payment.id)
    # Committed: the units left the shop, none are held any more.
    assert await shop.level(tenant, product) == (7, 0)
    assert await shop.reservation(tenant, order_id) == "committed"
    assert await shop.audit_actions(tenant, "payment", payment.id) == [
        "payments.pending",
        "payments.captured",
    ]
    # Each audit row is the payment as its change left it (written in the same statement).
    pending = {
        "status": "pending", "order_id": str(order_id), "amount_cents": 3 * PRICE,
        "provider_ref": None, "decline_reason": None, "version": 1,
    }  # fmt: skip
    captured_row = {**pending, "status": "captured", "provider_ref": payment.provider_ref}
    assert payment.provider_ref
    assert payment.version == 2
    assert await shop.audit_rows(tenant, "payment", payment.id) == [
        ("payments.pending", "service:order-pipeline", None, pending),
        ("payments.captured", "service:order-pipeline", pending, {**captured_row, "version": 2}),
    ]
    assert await shop.dead_letters() == 0


async def test_a_pending_order_gets_its_stock_from_the_pipeline(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 5)
    order_id = await shop.place(tenant, {product: 2}, reserve=False)
    short = await shop.place(tenant, {product: 6}, reserve=False)
    async with shop.running():
        await shop.until(tenant, order_id, S.FULFILLED)
        failed = await shop.until(tenant, short, S.FAILED)
    assert await shop.statuses(order_id) == ["pending", "reserved", "paid", "fulfilled"]
    assert (failed.failure_reason, await shop.payments(short)) == ("insufficient_stock", [])
    assert await shop.counts(tenant, short) == (0, 0, 0)
    assert await shop.level(tenant, product) == (3, 0)


async def test_a_declined_charge_fails_the_order_and_gives_the_stock_back(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 4)
    order_id = await shop.place(tenant, {product: 4})
    assert await shop.level(tenant, product) == (0, 4)
    await shop.faults(decline_rate=1, decline_code="insufficient_funds", tenant=tenant)
    async with shop.running():
        order = await shop.until(tenant, order_id, S.FAILED)
        await shop.eventually_level(tenant, product, (4, 0))
    assert order.failure_reason == "payment_declined"
    payment = only(await shop.payments(order_id))
    assert (payment.status, payment.decline_reason) == ("declined", "insufficient_funds")
    assert await shop.counts(tenant, order_id) == (0, 0, 1)
    assert await shop.reservation(tenant, order_id) == "released"
    assert await shop.statuses(order_id) == ["reserved", "failed"]


async def test_a_timed_out_charge_is_reconciled_into_one_capture(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 2)
    order_id = await shop.place(tenant, {product: 1})
    # The provider captures, then the answer is lost (longer than the client waits).
    await shop.faults(timeout_rate=1, hang_s=4, phase="after", tenant=tenant)
    async with shop.running():
        payment = only(await shop.until_paid_for(order_id, "unknown"))
        assert (await shop.order(tenant, order_id)).status is S.RESERVED
        assert (await shop.counts(tenant, order_id))[0] == 1  # taken, but we do not know yet
        await shop.no_faults()
        await shop.until(tenant, order_id, S.FULFILLED)
    settled = only(await shop.payments(order_id))
    assert (settled.id, settled.status) == (payment.id, "captured")
    assert settled.provider_ref is not None
    assert await shop.counts(tenant, order_id) == (1, 0, 0)
    assert await shop.audit_actions(tenant, "payment", payment.id) == [
        "payments.pending",
        "payments.unknown",
        "payments.captured",
    ]


async def test_an_answer_lost_to_5xx_is_reconciled_without_a_second_charge(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 2)
    order_id = await shop.place(tenant, {product: 1})
    # Every attempt (the client resends a 503) is answered 503 after the capture.
    await shop.faults(error_rate=1, error_status=503, phase="after", tenant=tenant)
    async with shop.running():
        await shop.until_paid_for(order_id, "unknown")
        await shop.no_faults()
        await shop.until(tenant, order_id, S.FULFILLED)
    assert await shop.counts(tenant, order_id) == (1, 0, 0)


async def test_a_charge_the_provider_never_saw_fails_the_order(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 2)
    order_id = await shop.place(tenant, {product: 2})
    # The request never gets through (a 500 before anything happens): unknown, and the
    # lookup by key finds nothing, so nothing was charged and nothing ever will be.
    await shop.faults(error_rate=1, error_status=500, tenant=tenant)
    async with shop.running():
        await shop.until_paid_for(order_id, "unknown", "failed")
        await shop.no_faults()  # the lookup by key answers again
        order = await shop.until(tenant, order_id, S.FAILED)
        await shop.eventually_level(tenant, product, (2, 0))
    assert order.failure_reason == "payment_failed"
    assert only(await shop.payments(order_id)).status == "failed"
    assert await shop.counts(tenant, order_id) == (0, 0, 0)


async def test_eight_concurrent_deliveries_of_one_message_charge_once(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 1)
    order_id = await shop.place(tenant, {product: 1})
    await shop.faults(latency_ms=200, jitter_ms=100, tenant=tenant)  # they overlap
    message = Message(
        id=str(uuid.uuid4()),
        tenant=tenant,
        type="orders.placed",
        payload=(
            f'{{"orderId":"{order_id}","tenantId":"{tenant}","toStatus":"reserved"}}'
        ).encode(),
    )
    async with shop.running() as (pipeline,):
        handle = routes(pipeline.pipeline)
        await asyncio.gather(*(handle(message) for _ in range(8)))
        await shop.until(tenant, order_id, S.FULFILLED)
    assert only(await shop.payments(order_id)).status == "captured"
    assert await shop.counts(tenant, order_id) == (1, 0, 0)


async def test_two_pipelines_take_every_order_once(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 100)
    orders = [await shop.place(tenant, {product: 1}) for _ in range(12)]
    async with shop.running(pipelines=2):
        for order_id in orders:
            await shop.until(tenant, order_id, S.FULFILLED)
    for order_id in orders:
        assert only(await shop.payments(order_id)).status == "captured"
        assert await shop.counts(tenant, order_id) == (1, 0, 0)
    assert await shop.level(tenant, product) == (88, 0)


async def test_an_unavailable_inventory_is_retried_with_backoff(shop: Shop, tenant: str) -> None:
    product = await shop.stock(tenant, 2)
    order_id = await shop.place(tenant, {product: 2}, reserve=False)
    nowhere = f"127.0.0.1:{procs.free_port()}"
    before = await Queue(shop.redis, shop.queue).stats()
    async with shop.running(inventory_target=nowhere):
        await eventually(
            lambda: Queue(shop.redis, shop.queue).stats(),
            lambda now: now.retried > before.retried,
            what="a retry of the reservation",
        )
        assert (await shop.order(tenant, order_id)).status is S.PENDING
    async with shop.running():
        await shop.until(tenant, order_id, S.FULFILLED)
    assert await shop.level(tenant, product) == (0, 0)
    assert await shop.dead_letters() == 0


async def test_every_event_type_of_the_queue_is_taken_and_none_dead_lettered(
    shop: Shop, tenant: str
) -> None:
    queue = Queue(shop.redis, shop.queue)
    before = await queue.stats()
    kinds = [
        "orders.closed",
        "orders.fulfilled",
        "orders.refunded",
        "orders.cancel_requested",
        "orders.pending",
    ]
    for kind in kinds:
        payload = f'{{"orderId":"{uuid.uuid4()}","tenantId":"{tenant}"}}'.encode()
        await queue.publish(Message(str(uuid.uuid4()), tenant, kind, payload))
    async with shop.running(relay=False):
        await eventually(
            queue.stats,
            lambda now: now.processed >= before.processed + len(kinds),
            what="every message processed",
        )
    assert (await queue.stats()).dead == before.dead


async def test_a_provider_down_for_everyone_defers_the_charge_under_its_key(
    shop: Shop, tenant: str
) -> None:
    product = await shop.stock(tenant, 1)
    order_id = await shop.place(tenant, {product: 1})
    queue = Queue(shop.redis, shop.queue)
    before = await queue.stats()
    await shop.faults(down=True, tenant=tenant)
    touchy = UpstreamPolicy(
        attempt_timeout_s=1.0, deadline_s=2.0, max_attempts=2, failure_threshold=1,
        reset_timeout_s=1.0,
    )  # fmt: skip
    async with shop.running(payments=touchy):
        await eventually(queue.stats, lambda now: now.deferred > before.deferred, what="a deferral")
        payment = only(await shop.payments(order_id))
        assert (payment.status, (await shop.order(tenant, order_id)).status) == (
            "pending",
            S.RESERVED,
        )
        await shop.no_faults()
        await shop.until(tenant, order_id, S.FULFILLED)
    assert only(await shop.payments(order_id)).id == payment.id
    assert await shop.counts(tenant, order_id) == (1, 0, 0)
    assert await shop.audit_actions(tenant, "payment", payment.id) == [
        "payments.pending",
        "payments.captured",
    ]
