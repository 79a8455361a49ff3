"""The change hub on a real PostgreSQL: notifications reach subscribers after commit only,
each its own entity's, many at once, a slow one collapsed, and across a dropped connection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import changes
from services.kit.changes import Change, Hub, HubSettings, Subscription

QUICK = HubSettings(queue_size=4, ping_interval_s=0.5, retry_base_s=0.05, retry_cap_s=0.2)


@pytest.fixture
async def hub(postgres_url: str) -> AsyncIterator[Hub]:
    made = Hub(postgres_url, [changes.ORDER_STATUS, changes.STOCK_LEVEL], QUICK)
    await asyncio.wait_for(made.listening(), 10)
    yield made
    await made.close()


async def _notify(engine: AsyncEngine, tenant: str, order_id: str, version: int) -> None:
    async with engine.begin() as conn:
        await changes.notify(
            conn, changes.ORDER_STATUS, {"tenant": tenant, "id": order_id, "version": version}
        )


async def _next(subscription: Subscription, within: float = 5.0) -> Change | None:
    async with asyncio.timeout(within):
        return await subscription.next()


async def _quiet(subscription: Subscription, for_s: float = 0.5) -> bool:
    try:
        async with asyncio.timeout(for_s):
            await subscription.next()
    except TimeoutError:
        return True
    return False


async def test_a_subscriber_gets_its_entitys_committed_changes_in_order(
    hub: Hub, engine: AsyncEngine, tenant: str
) -> None:
    order_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    with hub.subscribe(changes.ORDER_STATUS, tenant, order_id) as sub:
        await _notify(engine, tenant, other, 1)  # another order
        await _notify(engine, "t-other", order_id, 1)  # the same id in another tenant
        for version in (2, 3):
            await _notify(engine, tenant, order_id, version)
        seen = [await _next(sub), await _next(sub)]
        assert [c.payload["version"] for c in seen if c and c.payload] == [2, 3]
        assert await _quiet(sub)


async def test_a_rolled_back_change_is_never_told_and_a_committed_one_only_on_commit(
    hub: Hub, engine: AsyncEngine, tenant: str
) -> None:
    order_id = str(uuid.uuid4())
    payload = {"tenant": tenant, "id": order_id, "version": 2}
    with hub.subscribe(changes.ORDER_STATUS, tenant, order_id) as sub:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await changes.notify(conn, changes.ORDER_STATUS, payload)
            await transaction.rollback()
        assert await _quiet(sub)
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await changes.notify(conn, changes.ORDER_STATUS, {**payload, "version": 3})
            assert await _quiet(sub), "told before the commit"
            await transaction.commit()
        change = await _next(sub)
        assert change is not None
        assert change.payload == {**payload, "version": 3}


async def test_every_subscriber_of_an_entity_gets_every_change(
    hub: Hub, engine: AsyncEngine, tenant: str
) -> None:
    product = str(uuid.uuid4())
    with contextlib.ExitStack() as stack:
        subs = [
            stack.enter_context(hub.subscribe(changes.STOCK_LEVEL, tenant, product))
            for _ in range(50)
        ]
        async with engine.begin() as conn:
            await changes.notify(
                conn, changes.STOCK_LEVEL, {"tenant": tenant, "product_id": product, "version": 7}
            )
        got = await asyncio.gather(*(_next(s) for s in subs))
        assert all(c is not None and c.payload and c.payload["version"] == 7 for c in got)


async def test_a_slow_subscriber_is_collapsed_to_one_reread_and_holds_up_no_one(
    hub: Hub, engine: AsyncEngine, tenant: str
) -> None:
    order_id = str(uuid.uuid4())
    with (
        hub.subscribe(changes.ORDER_STATUS, tenant, order_id) as slow,
        hub.subscribe(changes.ORDER_STATUS, tenant, order_id) as quick,
    ):
        versions = list(range(2, 2 + QUICK.queue_size * 2 + 1))
        received: list[int] = []
        for version in versions:
            await _notify(engine, tenant, order_id, version)
            change = await _next(quick)
            assert change is not None
            assert change.payload is not None
            received.append(change.payload["version"])
        assert received == versions
        change = await _next(slow)
        assert change is not None
        assert change.reread
        assert await _quiet(slow)


async def test_after_the_connection_drops_the_hub_reconnects_and_asks_for_a_reread(
    hub: Hub, engine: AsyncEngine, tenant: str
) -> None:
    order_id = str(uuid.uuid4())
    with hub.subscribe(changes.ORDER_STATUS, tenant, order_id) as sub:
        before = hub.connects
        async with engine.begin() as conn:
            killed = await conn.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": changes.APPLICATION_NAME},
            )
        assert killed >= 1
        change = await _next(sub, 10)
        assert change is not None
        assert change.reread
        assert hub.connects > before
        await _notify(engine, tenant, order_id, 5)
        change = await _next(sub)
        assert change is not None
        assert change.payload is not None
        assert change.payload["version"] == 5


async def test_closing_the_hub_ends_every_subscription(postgres_url: str, tenant: str) -> None:
    hub = Hub(postgres_url, [changes.ORDER_STATUS], QUICK)
    await asyncio.wait_for(hub.listening(), 10)
    with hub.subscribe(changes.ORDER_STATUS, tenant, "x") as sub:
        waiting = asyncio.ensure_future(sub.next())
        await asyncio.sleep(0.05)
        await hub.close()
        assert await asyncio.wait_for(waiting, 5) is None
        assert await _next(sub) is None
    with hub.subscribe(changes.ORDER_STATUS, tenant, "y") as late:
        assert await _next(late) is None
