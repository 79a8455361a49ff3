"""Composition root of the order service: builds the real dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc
from shop.order.v1 import (
    notifications_pb2,
    notifications_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    reports_pb2,
    reports_pb2_grpc,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import changes, db, grpc_client
from services.kit.cursor import CursorCodec
from services.kit.idempotency import IdempotencyStore
from services.kit.server import Registration
from services.order import live
from services.order.config import OrderConfig
from services.order.notification_usecases import Notifications
from services.order.notifications import NotificationServicer
from services.order.reporting import Reports
from services.order.reports import ReportServicer
from services.order.servicer import OrderAdminServicer, OrderServicer
from services.order.stock import Reservations
from services.order.upstreams import Catalogue
from services.order.usecases import Orders

# Who the order service is when it calls the inventory (`service:order` there).
SERVICE_IDENTITY = "order"
SERVICE_NAME = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
ADMIN_SERVICE_NAME = order_pb2.DESCRIPTOR.services_by_name["OrderAdminService"].full_name
NOTIFICATION_SERVICE_NAME = notifications_pb2.DESCRIPTOR.services_by_name[
    "NotificationService"
].full_name
REPORT_SERVICE_NAME = reports_pb2.DESCRIPTOR.services_by_name["ReportService"].full_name


@dataclass(frozen=True)
class OrderApp:
    engine: AsyncEngine
    orders: Orders
    registrations: list[Registration]
    hub: changes.Hub
    channels: tuple[grpc.aio.Channel, ...] = ()

    async def drain(self) -> None:
        """End the open WatchOrder streams (the server stops taking calls)."""
        await self.hub.close()

    async def close(self) -> None:
        await self.hub.close()
        for channel in self.channels:
            await channel.close(None)
        await self.engine.dispose()


def bootstrap(config: OrderConfig, *, engine: AsyncEngine | None = None) -> OrderApp:
    """Wire the service; pass `engine` to share one (tests), else one is created."""
    if engine is None:
        engine = db.create_engine(config.database_url, pool_size=config.db_pool_size)
    products = grpc_client.dial(config.product_target, config.server.tls)
    inventory = grpc_client.dial(config.inventory_target, config.server.tls)
    orders = Orders(
        engine,
        IdempotencyStore(timedelta(seconds=config.idempotency_ttl_s)),
        CursorCodec(config.cursor_secret),
        Catalogue(products),
        Reservations(inventory, SERVICE_IDENTITY),
    )
    hub = changes.Hub(config.database_url, [changes.ORDER_STATUS])
    servicer = OrderServicer(orders, live.OrderWatch(orders, hub, config.watch_heartbeat_s))
    admin = OrderAdminServicer(orders)
    notices = NotificationServicer(Notifications(engine, CursorCodec(config.cursor_secret)))
    reports = ReportServicer(
        Reports(engine, IdempotencyStore(timedelta(seconds=config.idempotency_ttl_s)))
    )

    def add_to(server: grpc.aio.Server) -> None:
        order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    def add_admin_to(server: grpc.aio.Server) -> None:
        order_pb2_grpc.add_OrderAdminServiceServicer_to_server(admin, server)  # type: ignore[no-untyped-call]

    def add_notifications_to(server: grpc.aio.Server) -> None:
        notifications_pb2_grpc.add_NotificationServiceServicer_to_server(notices, server)  # type: ignore[no-untyped-call]

    def add_reports_to(server: grpc.aio.Server) -> None:
        reports_pb2_grpc.add_ReportServiceServicer_to_server(reports, server)  # type: ignore[no-untyped-call]

    return OrderApp(
        engine,
        orders,
        channels=(products, inventory),
        registrations=[
            Registration(SERVICE_NAME, add_to),
            Registration(ADMIN_SERVICE_NAME, add_admin_to),
            Registration(NOTIFICATION_SERVICE_NAME, add_notifications_to),
            Registration(REPORT_SERVICE_NAME, add_reports_to),
        ],
        hub=hub,
    )
