"""gRPC adapter for orders: metadata and protos in, use case call, protos out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

from shop.order.v1 import order_pb2, order_pb2_grpc

from services.kit import calls, errors, identity
from services.kit.idempotency import fingerprint
from services.kit.ids import parse_uuid
from services.kit.wire import timestamp
from services.order import live
from services.order.domain import (
    Caller,
    LineItem,
    NewOrder,
    NewPlacement,
    Order,
    OrderFilter,
    OrderStatus,
    Wanted,
    check_reason,
    parse_status,
)
from services.order.usecases import Orders, StatusView

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
        items=[_line(i) for i in order.items],
    )
    if order.total_cents is not None:
        msg.total_cents = order.total_cents
    if order.closed_at is not None:
        msg.closed_at.CopyFrom(timestamp(order.closed_at))
    if order.customer_ref is not None:
        msg.customer_ref = order.customer_ref
    if order.user_id is not None:
        msg.user_id = order.user_id
    _progress(msg, order)
    return msg


def _progress(msg: order_pb2.Order | order_pb2.OrderStatusView, order: Order) -> None:
    """A placed order's failure reason, pending cancel and charge state (absent on drafts)."""
    if order.failure_reason is not None:
        msg.failure_reason = order.failure_reason
    if order.cancel_requested:
        msg.cancel_requested = True
    if order.payment_status is not None:
        msg.payment_status = order.payment_status


def _line(item: LineItem) -> order_pb2.LineItem:
    msg = order_pb2.LineItem(
        sku=item.sku, quantity=item.quantity, unit_price_cents=item.unit_price_cents
    )
    if item.product_id is not None:
        msg.product_id = str(item.product_id)
    if item.name is not None:
        msg.name = item.name
    return msg


def placement(request: order_pb2.CreateOrderRequest) -> NewPlacement | None:
    """The catalogue order a request asks for, or None for a seed 001 draft (no line
    names a product). Placed lines name a product and a quantity only."""
    if not any(i.HasField("product_id") for i in request.items):
        return None
    wanted: list[Wanted] = []
    for n, item in enumerate(request.items):
        if not item.HasField("product_id"):
            raise errors.InvalidArgument.field(
                f"items[{n}].productId",
                "is required when any line names a product (a draft's lines name none)",
            )
        if item.sku or item.unit_price_cents or item.HasField("name"):
            raise errors.InvalidArgument.field(
                f"items[{n}]",
                "a placed line sends productId and quantity only: "
                "the catalogue sets sku, name and price",
            )
        wanted.append(Wanted(parse_uuid(item.product_id, f"items[{n}].productId"), item.quantity))
    ref = request.customer_ref if request.HasField("customer_ref") else None
    return NewPlacement(ref, tuple(wanted))


def status_view(view: StatusView) -> order_pb2.OrderStatusView:
    order = view.order
    msg = order_pb2.OrderStatusView(
        order_id=str(order.id),
        status=order.status.value,
        version=order.version,
        updated_at=timestamp(order.updated_at),
    )
    for change in view.history:
        step = msg.history.add(
            to_status=change.to_status.value, version=change.version, at=timestamp(change.at)
        )
        if change.from_status is not None:
            step.from_status = change.from_status.value
        if change.reason is not None:
            step.reason = change.reason
    _progress(msg, order)
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
        placed = placement(request)
        if placed is not None:
            body_hash = fingerprint("PlaceOrder", request.SerializeToString(deterministic=True))
            done = await self._orders.place(who, key, body_hash, placed)
            status = 202 if done.order.status is OrderStatus.PENDING else 201
            await calls.send_headers(
                context,
                http_status=200 if done.replayed else status,
                version=done.order.version,
                replayed=done.replayed,
            )
            return to_proto(done.order)
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

    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: Context
    ) -> order_pb2.Order:
        who = caller(context)
        order_id = parse_uuid(request.id)
        reason = check_reason(request.reason if request.HasField("reason") else None)
        done = await self._orders.cancel(who, order_id, reason, calls.if_match(context))
        await calls.send_headers(
            context, http_status=202 if done.accepted_later else None, version=done.order.version
        )
        return to_proto(done.order)

    async def GetOrderStatus(
        self, request: order_pb2.GetOrderStatusRequest, context: Context
    ) -> order_pb2.OrderStatusView:
        view = await self._orders.status(caller(context), parse_uuid(request.id))
        await calls.send_headers(context, version=view.order.version)
        return status_view(view)

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

    async def ListAllOrders(
        self, request: order_pb2.ListAllOrdersRequest, context: Context
    ) -> order_pb2.ListOrdersResponse:
        filters = OrderFilter(
            status=parse_status(request.status) if request.HasField("status") else None,
            created_from=request.created_from.ToDatetime(tzinfo=UTC)
            if request.HasField("created_from")
            else None,
            created_to=request.created_to.ToDatetime(tzinfo=UTC)
            if request.HasField("created_to")
            else None,
        )
        page = await self._orders.list_all(caller(context), filters, request.limit, request.cursor)
        response = order_pb2.ListOrdersResponse(items=[to_proto(o) for o in page.items])
        if page.next_cursor is not None:
            response.next_cursor = page.next_cursor
        return response

    async def SetOrderStatus(
        self, request: order_pb2.SetOrderStatusRequest, context: Context
    ) -> order_pb2.Order:
        who = caller(context)
        order_id = parse_uuid(request.id)
        to = parse_status(request.status)
        reason = check_reason(request.reason if request.HasField("reason") else None)
        done = await self._orders.set_status(who, order_id, to, reason, calls.if_match(context))
        await calls.send_headers(
            context, http_status=202 if done.accepted_later else None, version=done.order.version
        )
        return to_proto(done.order)
