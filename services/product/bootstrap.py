"""Composition root of the product gateway: builds the real dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc
from shop.product.v1 import product_pb2 as v1
from shop.product.v1 import product_pb2_grpc as v1_grpc
from shop.product.v2 import product_pb2 as v2
from shop.product.v2 import product_pb2_grpc as v2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, grpc_client
from services.kit.cache import TtlCache
from services.kit.cursor import CursorCodec
from services.kit.idempotency import IdempotencyStore
from services.kit.server import Registration
from services.kit.upstream import Upstream
from services.product.config import ProductConfig
from services.product.ledger import Ledger
from services.product.servicer_v1 import ProductServicerV1
from services.product.servicer_v2 import ProductServicerV2
from services.product.upstreams import Erp, Warehouse
from services.product.usecases import Budgets, Catalog

SERVICE_V1 = v1.DESCRIPTOR.services_by_name["ProductService"].full_name
SERVICE_V2 = v2.DESCRIPTOR.services_by_name["ProductService"].full_name


@dataclass(frozen=True)
class ProductApp:
    engine: AsyncEngine
    erp: Upstream
    warehouse: Upstream
    catalog: Catalog
    registrations: list[Registration]
    inventory: grpc.aio.Channel | None = None

    async def close(self) -> None:
        if self.inventory is not None:
            await self.inventory.close(None)
        await self.erp.aclose()
        await self.warehouse.aclose()
        await self.engine.dispose()


def bootstrap(config: ProductConfig, *, engine: AsyncEngine | None = None) -> ProductApp:
    """Wire the gateway; pass `engine` to share one (tests), else one is created."""
    if engine is None:
        engine = db.create_engine(config.database_url, pool_size=config.db_pool_size)
    erp = Upstream("erp", config.erp_url, config.erp)
    warehouse = Upstream("warehouse", config.warehouse_url, config.warehouse)
    catalog = Catalog(
        erp=Erp(erp),
        warehouse=Warehouse(warehouse),
        engine=engine,
        idempotency=IdempotencyStore(timedelta(seconds=config.idempotency_ttl_s)),
        cursors=CursorCodec(config.cursor_secret),
        products=TtlCache(
            ttl=config.product_ttl_s,
            stale_ttl=config.product_stale_s,
            max_entries=config.cache_max_entries,
            name="products",
        ),
        stock=TtlCache(
            ttl=config.stock_ttl_s,
            stale_ttl=config.stock_stale_s,
            max_entries=config.cache_max_entries,
            name="stock",
        ),
        budgets=Budgets(read_s=config.read_budget_s, write_s=config.write_budget_s),
        max_pages=config.cache_max_entries,
    )
    inventory = grpc_client.dial(config.inventory_target, config.server.tls)
    servicer_v1 = ProductServicerV1(catalog, Ledger(inventory))
    servicer_v2 = ProductServicerV2(catalog, config.low_stock_threshold)

    def add_v1(server: grpc.aio.Server) -> None:
        v1_grpc.add_ProductServiceServicer_to_server(servicer_v1, server)  # type: ignore[no-untyped-call]

    def add_v2(server: grpc.aio.Server) -> None:
        v2_grpc.add_ProductServiceServicer_to_server(servicer_v2, server)  # type: ignore[no-untyped-call]

    return ProductApp(
        engine,
        erp,
        warehouse,
        catalog,
        [Registration(SERVICE_V1, add_v1), Registration(SERVICE_V2, add_v2)],
        inventory,
    )
