"""Composition root of the inventory service: builds the real dependencies.

The reaper (and the periodic Warehouse sync) run as tasks of the server process rather than as a worker of
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

from services.inventory import live
from services.inventory.config import InventoryConfig
from services.inventory.servicer import InventoryServicer, ReservationServicer
from services.inventory.upstreams import Catalogue, Warehouse
from services.inventory.usecases import Reservations, Stock, StockSync
from services.kit import changes, db
from services.kit.cursor import CursorCodec
from services.kit.idempotency import IdempotencyStore
from services.kit.server import Registration
from services.kit.upstream import Upstream

SERVICE_NAME = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name
RESERVATION_SERVICE = inventory_pb2.DESCRIPTOR.services_by_name["ReservationService"].full_name


@dataclass
class InventoryApp:
    engine: AsyncEngine
    stock: Stock
    reservations: Reservations
    sync: StockSync
    upstreams: tuple[Upstream, ...]
    registrations: list[Registration]
    hub: changes.Hub
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_background(self, config: InventoryConfig) -> None:
        """Run the reaper and the Warehouse sync until `close` (needs a running loop)."""
        loop = asyncio.get_running_loop()
        if config.reaper_interval_s > 0:
            self._tasks.append(
                loop.create_task(
                    self.reservations.reap(
                        self._stop, config.reaper_interval_s, config.reaper_batch
                    )
                )
            )
        if config.sync_tenants:
            self._tasks.append(
                loop.create_task(
                    self.sync.run(self._stop, config.sync_tenants, config.sync_interval_s)
                )
            )

    async def drain(self) -> None:
        """End the open WatchStock streams (the server stops taking calls)."""
        await self.hub.close()

    async def close(self) -> None:
        await self.hub.close()
        self._stop.set()
        for task in self._tasks:
            await task
        for upstream in self.upstreams:
            await upstream.aclose()
        await self.engine.dispose()


def bootstrap(
    config: InventoryConfig, *, engine: AsyncEngine | None = None, background: bool = False
) -> InventoryApp:
    """Wire the service; pass `engine` to share one (tests), else one is created;
    `background` starts the reaper and the Warehouse sync (the process does)."""
    if engine is None:
        engine = db.create_engine(config.database_url, pool_size=config.db_pool_size)
    stock = Stock(
        engine,
        IdempotencyStore(timedelta(seconds=config.idempotency_ttl_s)),
        CursorCodec(config.cursor_secret),
    )
    reservations = Reservations(engine)
    erp = Upstream("erp", config.erp_url, config.erp)
    warehouse = Upstream("warehouse", config.warehouse_url, config.warehouse)
    sync = StockSync(engine, Catalogue(erp), Warehouse(warehouse), config.low_stock_threshold)
    hub = changes.Hub(config.database_url, [changes.STOCK_LEVEL])
    inventory_servicer = InventoryServicer(
        stock, sync, live.StockWatch(stock, hub, config.watch_heartbeat_s)
    )
    reservation_servicer = ReservationServicer(reservations)

    def add_inventory(server: grpc.aio.Server) -> None:
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server(inventory_servicer, server)  # type: ignore[no-untyped-call]

    def add_reservations(server: grpc.aio.Server) -> None:
        inventory_pb2_grpc.add_ReservationServiceServicer_to_server(reservation_servicer, server)  # type: ignore[no-untyped-call]

    app = InventoryApp(
        engine,
        stock,
        reservations,
        sync,
        (erp, warehouse),
        [
            Registration(SERVICE_NAME, add_inventory),
            Registration(RESERVATION_SERVICE, add_reservations),
        ],
        hub,
    )
    if background:
        app.start_background(config)
    return app
