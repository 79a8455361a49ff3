"""Composition root of the order service: builds the real dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.cursor import CursorCodec
from services.kit.idempotency import IdempotencyStore
from services.kit.server import Registration
from services.order.config import OrderConfig
from services.order.servicer import OrderServicer
from services.order.usecases import Orders

SERVICE_NAME = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


@dataclass(frozen=True)
class OrderApp:
    engine: AsyncEngine
    orders: Orders
    registrations: list[Registration]

    async def close(self) -> None:
        await self.engine.dispose()


def bootstrap(config: OrderConfig, *, engine: AsyncEngine | None = None) -> OrderApp:
    """Wire the service; pass `engine` to share one (tests), else one is created."""
    if engine is None:
        engine = db.create_engine(config.database_url, pool_size=config.db_pool_size)
    orders = Orders(
        engine,
        IdempotencyStore(timedelta(seconds=config.idempotency_ttl_s)),
        CursorCodec(config.cursor_secret),
    )
    servicer = OrderServicer(orders)

    def add_to(server: grpc.aio.Server) -> None:
        order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    return OrderApp(engine, orders, [Registration(SERVICE_NAME, add_to)])
