"""WatchOrder: an order's status now and at every committed change, until it is final.

The stream follows the order's change notifications (kit.changes.follow; sent by
transitions.py in each change's transaction): each one, and each re-read the hub
asks for, reads the order again with the caller's visibility (exactly GetOrder's)
and sends it when its version grew. A quiet order is sent
again every `heartbeat_s` seconds: the edge's stream idle timeout never cuts a
watched order, and the server finds out when its client is gone. The stream
ends after a terminal status, when the client leaves, and when the server drains
(the hub closes): a client then reconnects and gets the current status first.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from shop.order.v1 import order_pb2

from services.kit import changes
from services.kit.wire import timestamp
from services.order.domain import Caller, Order
from services.order.usecases import Orders

HEARTBEAT_S = 15.0


@dataclass(frozen=True)
class OrderWatch:
    """What a watch needs: the orders to read, the hub that says when to, how often to repeat."""

    orders: Orders
    hub: changes.Hub
    heartbeat_s: float = HEARTBEAT_S


async def statuses(
    watch: OrderWatch, caller: Caller, order_id: uuid.UUID
) -> AsyncIterator[tuple[Order, bool]]:
    """The order as the caller may see it, now and after each change (flag: a heartbeat
    repeat); OrderNotFound before the first when the caller may not see it."""
    async for order, repeat in changes.follow(
        watch.hub,
        changes.ORDER_STATUS,
        (caller.tenant, str(order_id)),
        lambda: watch.orders.get(caller, order_id),
        lambda order: order.version,
        heartbeat_s=watch.heartbeat_s,
        final=lambda order: order.terminal,
    ):
        yield order, repeat


def to_event(order: Order) -> order_pb2.OrderStatusEvent:
    """The wire form of one status of a watched order."""
    event = order_pb2.OrderStatusEvent(
        order_id=str(order.id),
        status=order.status.value,
        version=order.version,
        at=timestamp(order.updated_at),
        terminal=order.terminal,
    )
    if order.failure_reason is not None:
        event.failure_reason = order.failure_reason
    if order.placed:
        event.cancel_requested = order.cancel_requested
    if order.payment_status is not None:
        event.payment_status = order.payment_status
    return event


async def watch(
    watch: OrderWatch, caller: Caller, order_id: uuid.UUID
) -> AsyncIterator[order_pb2.OrderStatusEvent]:
    """WatchOrder's events: the current status first, then every change, the last terminal."""
    async for order, _repeat in statuses(watch, caller, order_id):
        yield to_event(order)
