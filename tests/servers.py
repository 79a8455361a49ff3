"""Platform services as integration tests run them: their configuration for the
session's servers, (the order service) the server on a free port with a channel, and
a probe service for tests of the kit's own server and client."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from shop.order.v1.order_pb2 import GetOrderRequest as ProbeMessage

from services.inventory.config import InventoryConfig
from services.kit.config import ServerConfig
from services.kit.server import create_server
from services.kit.upstream import UpstreamPolicy
from services.order.bootstrap import OrderApp, bootstrap
from services.order.config import OrderConfig

# An address nothing listens on: these tests place no order, so the catalogue and the
# inventory are never called (placement is tested through the edge).
NOWHERE = "127.0.0.1:9"


def order_config(postgres_url: str, **changes: Any) -> OrderConfig:
    """The order service's configuration for the session's database, with `changes`."""
    config = OrderConfig(
        server=ServerConfig(
            bind="127.0.0.1:0", log_level="WARNING", otlp_endpoint=None, shutdown_grace_s=1
        ),
        database_url=postgres_url,
        db_pool_size=2,
        cursor_secret=b"integration-test-cursor-secret",
        idempotency_ttl_s=3600,
        product_target=NOWHERE,
        inventory_target=NOWHERE,
    )
    return dataclasses.replace(config, **changes)


def inventory_config(postgres_url: str, erp_url: str, warehouse_url: str) -> InventoryConfig:
    """The inventory service's configuration: no reaper or sync loop of its own (tests
    call them), the stubs' URLs."""
    return InventoryConfig(
        server=ServerConfig(
            bind="127.0.0.1:0", log_level="WARNING", otlp_endpoint=None, shutdown_grace_s=1
        ),
        database_url=postgres_url,
        db_pool_size=10,
        cursor_secret=b"integration-test-cursor-secret",
        idempotency_ttl_s=3600,
        reaper_interval_s=0,
        reaper_batch=10,
        erp_url=erp_url,
        warehouse_url=warehouse_url,
        erp=UpstreamPolicy(),
        warehouse=UpstreamPolicy(),
        sync_tenants=(),
        sync_interval_s=0,
        low_stock_threshold=5,
    )


@asynccontextmanager
async def serving(config: OrderConfig) -> AsyncIterator[tuple[OrderApp, grpc.aio.Channel]]:
    """The order service on a free port, and a channel to it; stopped afterwards."""
    app = bootstrap(config)
    server, port, _health = await create_server(app.registrations, config.server.bind)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield app, channel
    finally:
        await server.stop(1)
        await app.close()


def probe(
    service: str,
    get: Callable[[ProbeMessage, Any], Awaitable[ProbeMessage]],
    watch: Callable[[ProbeMessage, Any], AsyncIterator[ProbeMessage]],
) -> Callable[[grpc.aio.Server], None]:
    """A registration's `add` for a probe service: a unary `Get` and a server-streaming
    `Watch`, both on one message (`ProbeMessage`, which has an `id`)."""
    io: dict[str, Any] = {
        "request_deserializer": ProbeMessage.FromString,
        "response_serializer": ProbeMessage.SerializeToString,
    }

    def add(server: grpc.aio.Server) -> None:
        handlers = grpc.method_handlers_generic_handler(
            service,
            {
                "Get": grpc.unary_unary_rpc_method_handler(get, **io),
                "Watch": grpc.unary_stream_rpc_method_handler(watch, **io),
            },
        )
        server.add_generic_rpc_handlers((handlers,))

    return add
