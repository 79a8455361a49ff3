"""Composition root of the inventory service: builds the real dependencies.

The reaper runs as a task of the server process rather than as a worker of
its own: it is one short transaction every few seconds on the service's own
tables, with SKIP LOCKED so any number of replicas may run it side by side,
and it needs nothing the server does not already have.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.inventory.config import InventoryConfig
from services.inventory.servicer import InventoryServicer, ReservationServicer
from services.inventory.usecases import Reservations, Stock
from services.kit import db
from services.kit.cursor import CursorCodec
from services.kit.idempotency import IdempotencyStore
from services.kit.server import Registration

SERVICE_NAME = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name
RESERVATION_SERVICE = inventory_pb2.DESCRIPTOR.services_by_name["ReservationService"].full_name


@dataclass
class InventoryApp:
    engine: AsyncEngine
    stock: Stock
    reservations: Reservations
    registrations: list[Registration]
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _reaper: asyncio.Task[None] | None = None

    def start_reaper(self, interval_s: float, batch: int) -> None:
        """Run the reaper in the background until `close` (a running event loop needed)."""
        self._reaper = asyncio.get_running_loop().create_task(
            self.reservations.reap(self._stop, interval_s, batch)
        )

    async def close(self) -> None:
        self._stop.set()
        if self._reaper is not None:
            await self._reaper
        await self.engine.dispose()


def bootstrap(
    config: InventoryConfig, *, engine: AsyncEngine | None = None, reaper: bool = False
) -> InventoryApp:
    """Wire the service; pass `engine` to share one (tests), else one is created;
    `reaper` starts the expired-reservation reaper (the process does)."""
    if engine is None:
        engine = db.create_engine(config.database_url, pool_size=config.db_pool_size)
    stock = Stock(
        engine,
        IdempotencyStore(timedelta(seconds=config.idempotency_ttl_s)),
        CursorCodec(config.cursor_secret),
    )
    reservations = Reservations(engine)
    inventory_servicer = InventoryServicer(stock)
    reservation_servicer = ReservationServicer(reservations)

    def add_inventory(server: grpc.aio.Server) -> None:
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server(inventory_servicer, server)  # type: ignore[no-untyped-call]

    def add_reservations(server: grpc.aio.Server) -> None:
        inventory_pb2_grpc.add_ReservationServiceServicer_to_server(reservation_servicer, server)  # type: ignore[no-untyped-call]

    app = InventoryApp(
        engine,
        stock,
        reservations,
        [
            Registration(SERVICE_NAME, add_inventory),
            Registration(RESERVATION_SERVICE, add_reservations),
        ],
    )
    if reaper and config.reaper_interval_s > 0:
        app.start_reaper(config.reaper_interval_s, config.reaper_batch)
    return app
