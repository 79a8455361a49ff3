"""The inventory's stock ledger as the product gateway reads it (over the kit's gRPC
client): `GET /v1/products/{id}/inventory` answers the platform's own figures,
where reservations for orders are counted, rather than the Warehouse's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.kit.grpc_client import platform_error

CALL_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Level:
    available: int
    reserved: int

    @property
    def on_hand(self) -> int:
        """Units the shop holds: what can be sold plus what orders hold."""
        return self.available + self.reserved


class Ledger:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = inventory_pb2_grpc.InventoryServiceStub(channel)  # type: ignore[no-untyped-call]

    async def level(self, tenant: str, product_id: uuid.UUID) -> Level:
        """The product's level (zeros for a product the ledger never stocked)."""
        try:
            stock = await self._stub.GetStock(
                inventory_pb2.GetStockRequest(product_id=str(product_id)),
                metadata=(("x-tenant-id", tenant),),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            raise platform_error(exc) from None
        return Level(stock.available, stock.reserved)
