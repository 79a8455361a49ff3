"""The inventory's reservations as the order service and the pipeline use them, held in the order's id.

Calls go through the kit's gRPC client acting as the pipeline's service identity in
the order's tenant; a failed call raises the platform error the inventory raised
(errors.InsufficientStock, errors.Conflict, errors.NotFound, errors.Unavailable...).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.kit import errors
from services.kit.grpc_client import platform_error, service_identity

SERVICE = "order-pipeline"  # the pipeline's identity; the order service passes its own
# One reservation call; the inventory answers in milliseconds.
CALL_TIMEOUT_S = 3.0


class Reservations:
    """Reserve, extend, commit and release the stock of one order."""

    def __init__(self, channel: grpc.aio.Channel, service: str = SERVICE) -> None:
        self._stub = inventory_pb2_grpc.ReservationServiceStub(channel)  # type: ignore[no-untyped-call]
        self._service = service

    def _md(self, tenant: str) -> tuple[tuple[str, str], ...]:
        return service_identity(self._service, tenant).metadata()

    async def reserve(
        self, tenant: str, order_id: uuid.UUID, units: Mapping[uuid.UUID, int], ttl_s: int = 0
    ) -> None:
        """Hold every line or none (a repeat answers the stored reservation)."""
        request = inventory_pb2.ReserveRequest(
            reservation_id=str(order_id),
            lines=[
                inventory_pb2.ReservationLine(product_id=str(p), quantity=n)
                for p, n in sorted(units.items())
            ],
            ttl_seconds=ttl_s,
        )
        try:
            await self._stub.Reserve(request, metadata=self._md(tenant), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise platform_error(exc) from None

    async def extend(self, tenant: str, order_id: uuid.UUID, ttl_s: int) -> None:
        """Keep the reaper away for `ttl_s` more; errors.Conflict when it is no longer held."""
        request = inventory_pb2.ExtendRequest(reservation_id=str(order_id), ttl_seconds=ttl_s)
        try:
            await self._stub.Extend(request, metadata=self._md(tenant), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise platform_error(exc) from None

    async def commit(self, tenant: str, order_id: uuid.UUID) -> None:
        """The units left the shop (idempotent); errors.Conflict when it was released."""
        request = inventory_pb2.CommitRequest(reservation_id=str(order_id))
        try:
            await self._stub.Commit(request, metadata=self._md(tenant), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise platform_error(exc) from None

    async def release(self, tenant: str, order_id: uuid.UUID) -> bool:
        """Give the units back (idempotent); False when there is nothing to give back
        (never reserved, or already committed)."""
        request = inventory_pb2.ReleaseRequest(reservation_id=str(order_id))
        try:
            await self._stub.Release(request, metadata=self._md(tenant), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            error = platform_error(exc)
            if isinstance(error, errors.NotFound | errors.Conflict):
                return False
            raise error from None
        return True
