"""gRPC adapters for inventory: metadata and protos in, use case call, protos out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.inventory import live
from services.inventory.domain import Reservation, StockLevel, merged_lines, ttl_seconds
from services.inventory.usecases import Reservations, Stock, StockSync
from services.kit import calls, identity
from services.kit.idempotency import fingerprint
from services.kit.ids import parse_uuid
from services.kit.wire import timestamp

Context = calls.Context


def stock_to_proto(level: StockLevel) -> inventory_pb2.Stock:
    msg = inventory_pb2.Stock(
        product_id=str(level.product_id),
        tenant_id=level.tenant_id,
        available=level.available,
        reserved=level.reserved,
        low_stock_threshold=level.low_stock_threshold,
        version=level.version,
    )
    if level.updated_at is not None:
        msg.updated_at.CopyFrom(timestamp(level.updated_at))
    return msg


def reservation_to_proto(reservation: Reservation) -> inventory_pb2.Reservation:
    return inventory_pb2.Reservation(
        id=str(reservation.id),
        tenant_id=reservation.tenant_id,
        status=reservation.status.value,
        lines=[
            inventory_pb2.ReservationLine(product_id=str(line.product_id), quantity=line.quantity)
            for line in reservation.lines
        ],
        expires_at=timestamp(reservation.expires_at),
        created_at=timestamp(reservation.created_at),
        updated_at=timestamp(reservation.updated_at),
    )


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    """shop.inventory.v1.InventoryService over the Stock use cases."""

    def __init__(self, stock: Stock, sync: StockSync, watch: live.StockWatch) -> None:
        self._stock = stock
        self._sync = sync
        self._watch = watch

    async def SyncStock(
        self, request: inventory_pb2.SyncStockRequest, context: Context
    ) -> inventory_pb2.SyncStockResponse:
        done = await self._sync.sync(identity.tenant(context))
        return inventory_pb2.SyncStockResponse(products=done.products, changed=done.changed)

    async def GetStock(
        self, request: inventory_pb2.GetStockRequest, context: Context
    ) -> inventory_pb2.Stock:
        level = await self._stock.get(
            identity.tenant(context), parse_uuid(request.product_id, "productId")
        )
        await calls.send_headers(context, version=level.version)
        return stock_to_proto(level)

    async def WatchStock(
        self, request: inventory_pb2.WatchStockRequest, context: Context
    ) -> AsyncIterator[inventory_pb2.Stock]:
        tenant = identity.tenant(context)
        product_id = parse_uuid(request.product_id, "productId")
        async for level in live.levels(self._watch, tenant, product_id):
            yield stock_to_proto(level)

    async def ListLowStock(
        self, request: inventory_pb2.ListLowStockRequest, context: Context
    ) -> inventory_pb2.ListLowStockResponse:
        page = await self._stock.low_stock(identity.tenant(context), request.limit, request.cursor)
        response = inventory_pb2.ListLowStockResponse(items=[stock_to_proto(s) for s in page.items])
        if page.next_cursor is not None:
            response.next_cursor = page.next_cursor
        return response

    async def Restock(
        self, request: inventory_pb2.RestockRequest, context: Context
    ) -> inventory_pb2.Stock:
        who = identity.of(context)
        tenant, user = who.valid_tenant(), who.required_user()
        product_id = parse_uuid(request.product_id, "productId")
        expected = calls.require_if_match(context)
        key = calls.require_header(context, "idempotency-key", "Idempotency-Key")
        body_hash = fingerprint("Restock", request.SerializeToString(deterministic=True))
        done = await self._stock.restock(
            tenant,
            user,
            key,
            body_hash,
            product_id,
            expected,
            request.available,
            request.low_stock_threshold,
        )
        await calls.send_headers(context, version=done.level.version, replayed=done.replayed)
        return stock_to_proto(done.level)


class ReservationServicer(inventory_pb2_grpc.ReservationServiceServicer):
    """shop.inventory.v1.ReservationService (internal) over the Reservations use cases."""

    def __init__(self, reservations: Reservations) -> None:
        self._reservations = reservations

    async def Reserve(
        self, request: inventory_pb2.ReserveRequest, context: Context
    ) -> inventory_pb2.Reservation:
        tenant = identity.tenant(context)
        reservation_id = parse_uuid(request.reservation_id, "reservationId")
        lines = merged_lines((line.product_id, line.quantity) for line in request.lines)
        ttl = ttl_seconds(request.ttl_seconds)
        return reservation_to_proto(
            await self._reservations.reserve(tenant, reservation_id, lines, ttl)
        )

    async def Release(
        self, request: inventory_pb2.ReleaseRequest, context: Context
    ) -> inventory_pb2.Reservation:
        tenant = identity.tenant(context)
        reservation_id = parse_uuid(request.reservation_id, "reservationId")
        return reservation_to_proto(await self._reservations.release(tenant, reservation_id))

    async def Commit(
        self, request: inventory_pb2.CommitRequest, context: Context
    ) -> inventory_pb2.Reservation:
        tenant = identity.tenant(context)
        reservation_id = parse_uuid(request.reservation_id, "reservationId")
        return reservation_to_proto(await self._reservations.commit(tenant, reservation_id))

    async def Extend(
        self, request: inventory_pb2.ExtendRequest, context: Context
    ) -> inventory_pb2.Reservation:
        tenant = identity.tenant(context)
        reservation_id = parse_uuid(request.reservation_id, "reservationId")
        ttl = ttl_seconds(request.ttl_seconds)
        return reservation_to_proto(await self._reservations.extend(tenant, reservation_id, ttl))

    async def GetReservation(
        self, request: inventory_pb2.GetReservationRequest, context: Context
    ) -> inventory_pb2.Reservation:
        tenant = identity.tenant(context)
        reservation_id = parse_uuid(request.reservation_id, "reservationId")
        return reservation_to_proto(await self._reservations.get(tenant, reservation_id))
