"""The platform's own order pipeline (started by the launcher from the topology): an order
placed as the order service places it is paid once and fulfilled, and the process's
metrics count the capture."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from services.kit import db, grpc_client
from services.launcher.platform import State
from services.order.domain import OrderStatus
from services.order.pipeline.config import ORDERS_QUEUE
from tests.pipeline import Shop, only


@pytest.fixture
async def shop(platform: State) -> AsyncIterator[Shop]:
    redis = Redis.from_url(platform.redis_url)
    engine = db.create_engine(platform.database_url, pool_size=2)
    async with grpc_client.dial(platform.target("inventory"), platform.client_tls) as channel:
        yield Shop(
            postgres_url=platform.database_url,
            redis_url=platform.redis_url,
            inventory_target=platform.target("inventory"),
            payments_url=platform.urls["PAYMENTS_URL"],
            engine=engine,
            channel=channel,
            redis=redis,
            queue=ORDERS_QUEUE,
            run_dir=Path(platform.run_dir),
            tls=platform.client_tls,
        )
    await redis.aclose()
    await engine.dispose()


async def test_the_platforms_pipeline_pays_and_fulfils_a_placed_order(
    platform: State, shop: Shop
) -> None:
    assert "order-pipeline-1" in platform.pids  # replicas are named <process>-<n>
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    product = await shop.stock(tenant, 5)
    order_id = await shop.place(tenant, {product: 2})
    await shop.until(tenant, order_id, OrderStatus.FULFILLED, within=30)
    assert only(await shop.payments(order_id)).status == "captured"
    assert await shop.counts(tenant, order_id) == (1, 0, 0)
    assert await shop.level(tenant, product) == (3, 0)
    (endpoint,) = platform.metrics["order-pipeline"]
    async with httpx.AsyncClient(timeout=5) as client:
        scraped = (await client.get(endpoint)).text
    assert 'shop_payments_total{status="captured"}' in scraped
