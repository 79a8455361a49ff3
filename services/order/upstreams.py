"""The product catalogue as an order is placed against it, over the kit's gRPC client
(the inventory's reservations are services.order.stock).

Calls carry the caller's deadline, request id and trace (services.kit.grpc_client)
and read the tenant's public catalogue (the tenant's id, no user).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from services.kit import errors
from services.kit.grpc_client import platform_error

# How long one catalogue read or reservation call may take (the caller's own
# deadline is shorter when it has one).
CALL_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class CatalogueProduct:
    id: uuid.UUID
    sku: str
    name: str
    price_cents: int


class Catalogue:
    """Live products of a tenant's catalogue by id (the product gateway, cached there)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]

    async def _one(self, tenant: str, product_id: uuid.UUID) -> CatalogueProduct | None:
        try:
            found = await self._stub.GetProduct(
                product_pb2.GetProductRequest(id=str(product_id)),
                metadata=(("x-tenant-id", tenant),),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            error = platform_error(exc)
            if isinstance(error, errors.NotFound):
                return None
            raise error from None
        return CatalogueProduct(uuid.UUID(found.id), found.sku, found.name, found.price_cents)

    async def products(
        self, tenant: str, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, CatalogueProduct]:
        """The live products among `ids` (a deleted or unknown one is absent)."""
        unique = list(dict.fromkeys(ids))
        found = await asyncio.gather(*(self._one(tenant, i) for i in unique))
        return {p.id: p for p in found if p is not None}
