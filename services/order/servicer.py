"""gRPC adapter for orders: metadata and protos in, use case call, protos out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from shop.order.v1 import order_pb2, order_pb2_grpc

from services.kit import calls, identity
from services.kit.idempotency import fingerprint
from services.kit.ids import parse_uuid
from services.kit.wire import timestamp
from services.order import live
from services.order.domain import Caller, LineItem, NewOrder, Order
from services.order.usecases import Orders

Context = calls.Context


def caller(context: Context) -> Caller:
    """The verified user and tenant; tenant-wide only for the admin role (fail closed:
    no role, or any other role, is a customer limited to their own orders)."""
    who = identity.of(context)  # one read of the metadata for all three
    return Caller(who.valid_tenant(), who.required_user(), who.is_admin)


def to_proto(order: Order) -> order_pb2.Order:
    """The wire form of an order."""
    msg = order_pb2.Order(
        id=str(order.id),
        tenant_id=order.tenant_id,
        status=order.status.value,
        version=order.version,
        created_at=timestamp(order.created_at),
        updated_at=timestamp(order.updated_at),
        items=[
            order_pb2.LineItem(sku=i.sku, quantity=i.quantity, unit_price_cents=i.unit_price_cents)
            for i in order.items
        ],
    )
    if order.total_cents is not None:
        msg.total_cents = order.total_cents
    if order.closed_at is not None:
        msg.closed_at.CopyFrom(timestamp(order.closed_at))
    if order.customer_ref is not None:
        msg.customer_ref = order.customer_ref
    if order.user_id is not None:
        msg.user_id = order.user_id
    return msg


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    """shop.order.v1.OrderService over the Orders use cases."""

    def __init__(self, orders: Orders, watch: live.OrderWatch) -> None:
        self._orders = orders
        self._watch = watch

    async def CreateOrder(
        self, request: order_pb2.CreateOrderRequest, context: Context
    ) -> order_pb2.Order:
        who = caller(context)
        key = calls.require_header(context, "idempotency-key", "Idempotency-Key")
        new = NewOrder(
            customer_ref=request.customer_ref if request.HasField("customer_ref") else None,
            items=tuple(LineItem(i.sku, i.quantity, i.unit_price_cents) for i in request.items),
        )
        body_hash = fingerprint("CreateOrder", request.SerializeToString(deterministic=True))
        created = await self._orders.create(who, key, body_hash, new)
        await calls.send_headers(
            context,
            http_status=200 if created.replayed else 201,
            version=created.order.version,
            replayed=created.replayed,
        )
        return to_proto(created.order)

    async def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: Context
    ) -> order_pb2.Order:
        order = await self._orders.get(caller(context), parse_uuid(request.id))
        await calls.send_headers(context, version=order.version)
        return to_proto(order)

    async def ConfirmOrder(
        self, request: order_pb2.ConfirmOrderRequest, context: Context
    ) -> order_pb2.Order:
        who = caller(context)
        order_id = parse_uuid(request.id)
        expected = calls.require_if_match(context)
        total = request.total_cents if request.HasField("total_cents") else None
        order = await self._orders.confirm(who, order_id, expected, total)
        await calls.send_headers(context, version=order.version)
        return to_proto(order)

    async def CloseOrder(
        self, request: order_pb2.CloseOrderRequest, context: Context
    ) -> order_pb2.Order:
        who = caller(context)
        order_id = parse_uuid(request.id)
        order = await self._orders.close(who, order_id, calls.if_match(context))
        await calls.send_headers(context, version=order.version)
        return to_proto(order)

    async def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: Context
    ) -> order_pb2.ListOrdersResponse:
        page = await self._orders.list(caller(context), request.limit, request.cursor)
        response = order_pb2.ListOrdersResponse(items=[to_proto(o) for o in page.items])
        if page.next_cursor is not None:
            response.next_cursor = page.next_cursor
        return response

    async def WatchOrder(
        self, request: order_pb2.WatchOrderRequest, context: Context
    ) -> AsyncIterator[order_pb2.OrderStatusEvent]:
        who, order_id = caller(context), parse_uuid(request.id)
        async for event in live.watch(self._watch, who, order_id):
            yield event


class OrderAdminServicer(order_pb2_grpc.OrderAdminServiceServicer):
    """shop.order.v1.OrderAdminService over the Orders use cases."""

    def __init__(self, orders: Orders) -> None:
        self._orders = orders
