"""The order service's events: domain orders as their contracts (shop.order.events.v1).

The domain stays plain Python; this module is where an order becomes the
message the outbox stores (its JSON form) and the relay publishes.
"""

from __future__ import annotations

from shop.order.events.v1 import events_pb2

from services.kit.outbox import Event
from services.kit.wire import timestamp
from services.order.domain import Order

AGGREGATE = "order"
CLOSED = "orders.closed"


def closed(order: Order) -> Event:
    """The `orders.closed` event of an order just closed (seed 001's payload)."""
    assert order.closed_at is not None
    assert order.total_cents is not None
    contract = events_pb2.OrderClosed(
        order_id=str(order.id),
        tenant_id=order.tenant_id,
        total_cents=order.total_cents,
        closed_at=timestamp(order.closed_at),
    )
    return Event(AGGREGATE, str(order.id), order.tenant_id, CLOSED, contract)
