"""Live views without the edge: WatchOrder over native gRPC (a server on port 0, real
PostgreSQL), and every stock write of the inventory telling its watchers on commit."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from shop.order.v1 import order_pb2, order_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.inventory import repository as stock_rows
from services.inventory.domain import Line
from services.inventory.usecases import Reservations
from services.kit import changes
from services.kit.server import create_server
from services.order.bootstrap import OrderApp, bootstrap
from services.order.domain import OrderStatus
from tests import checkout
from tests.servers import order_config, serving

USER = "5f0c1a8e-0000-4000-8000-0000000000aa"


@pytest.fixture(scope="module")
async def served(postgres_url: str) -> AsyncIterator[tuple[OrderApp, grpc.aio.Channel]]:
    async with serving(order_config(postgres_url, db_pool_size=4, watch_heartbeat_s=30)) as (
        app,
        ch,
    ):
        yield app, ch


def _md(tenant: str, user: str = USER) -> tuple[tuple[str, str], ...]:
    return (("x-user-id", user), ("x-tenant-id", tenant))


async def _placed(engine: AsyncEngine, tenant: str) -> uuid.UUID:
    return (await checkout.write_placed(engine, tenant, USER)).id


async def _move(engine: AsyncEngine, tenant: str, order_id: uuid.UUID, to: OrderStatus) -> None:
    await checkout.write_move(engine, tenant, order_id, to)


async def test_a_watch_sends_the_status_now_then_each_change_and_ends_when_final(
    served: tuple[OrderApp, grpc.aio.Channel], engine: AsyncEngine, tenant: str
) -> None:
    _app, channel = served
    order_id = await _placed(engine, tenant)
    stub = order_pb2_grpc.OrderServiceStub(channel)
    call = stub.WatchOrder(order_pb2.WatchOrderRequest(id=str(order_id)), metadata=_md(tenant))
    events = call.__aiter__()
    first = await asyncio.wait_for(events.__anext__(), 10)
    assert (first.status, first.version, first.terminal) == ("pending", 1, False)
    seen = []
    for status in (OrderStatus.RESERVED, OrderStatus.FAILED):
        await _move(engine, tenant, order_id, status)
        event = await asyncio.wait_for(events.__anext__(), 10)
        seen.append((event.status, event.version, event.terminal))
    assert seen == [("reserved", 2, False), ("failed", 3, True)]
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(events.__anext__(), 5)
    assert await call.code() == grpc.StatusCode.OK


async def test_another_customers_order_is_not_found_before_any_event(
    served: tuple[OrderApp, grpc.aio.Channel], engine: AsyncEngine, tenant: str
) -> None:
    _app, channel = served
    order_id = await _placed(engine, tenant)
    stub = order_pb2_grpc.OrderServiceStub(channel)
    for md in (_md(tenant, "someone-else"), _md("t-elsewhere")):
        call = stub.WatchOrder(order_pb2.WatchOrderRequest(id=str(order_id)), metadata=md)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_draining_ends_open_watches_at_once(postgres_url: str, tenant: str) -> None:
    """A stopping server ends its streams itself instead of waiting out the grace."""
    base = order_config(postgres_url)
    config = dataclasses.replace(base, server=dataclasses.replace(base.server, shutdown_grace_s=30))
    app = bootstrap(config)
    server, port, _health = await create_server(app.registrations, config.server.bind)
    order_id = await _placed(app.engine, tenant)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        calls = [
            stub.WatchOrder(order_pb2.WatchOrderRequest(id=str(order_id)), metadata=_md(tenant))
            for _ in range(3)
        ]
        for call in calls:
            assert (await asyncio.wait_for(call.read(), 10)).status == "pending"
        started = time.monotonic()
        await app.drain()
        await server.stop(config.server.shutdown_grace_s)
        assert time.monotonic() - started < 5
        for call in calls:
            assert await call.code() == grpc.StatusCode.OK
    await app.close()


async def _told(subscription: changes.Subscription) -> int:
    async with asyncio.timeout(5):
        change = await subscription.next()
    assert change is not None
    assert change.payload is not None
    return int(change.payload["version"])


async def test_every_stock_write_tells_the_products_watchers(
    postgres_url: str, engine: AsyncEngine, tenant: str
) -> None:
    hub = changes.Hub(postgres_url, [changes.STOCK_LEVEL])
    await asyncio.wait_for(hub.listening(), 10)
    product = uuid.uuid4()
    reservations = Reservations(engine)
    try:
        with hub.subscribe(changes.STOCK_LEVEL, tenant, str(product)) as sub:
            async with engine.begin() as conn:  # a restock or a sync
                await stock_rows.set_stock(conn, tenant, product, 10, 2, None)
            assert await _told(sub) == 1
            first, second = uuid.uuid4(), uuid.uuid4()
            await reservations.reserve(tenant, first, [Line(product, 3)], 60)
            assert await _told(sub) == 2
            await reservations.release(tenant, first)
            assert await _told(sub) == 3
            await reservations.reserve(tenant, second, [Line(product, 2)], 60)
            assert await _told(sub) == 4
            await reservations.commit(tenant, second)
            assert await _told(sub) == 5
            expiring = uuid.uuid4()
            await reservations.reserve(tenant, expiring, [Line(product, 1)], 1)
            assert await _told(sub) == 6
            later = datetime.now(UTC) + timedelta(seconds=5)
            while await reservations.reap_once(100, later):  # the reaper's release
                pass
            assert await _told(sub) == 7
            refused = uuid.uuid4()
            with pytest.raises(Exception):  # noqa: B017, PT011 - more than is there: nothing changes
                await reservations.reserve(tenant, refused, [Line(product, 1000)], 60)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await sub.next()
    finally:
        await hub.close()
