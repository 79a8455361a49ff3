"""The inventory's events as their contracts (shop.inventory.events.v1)."""

from __future__ import annotations

from shop.inventory.events.v1 import events_pb2

from services.inventory.domain import StockLevel
from services.kit.outbox import Event
from services.kit.wire import timestamp

AGGREGATE = "inventory"
LOW_STOCK = "inventory.low_stock"


def low_stock(level: StockLevel) -> Event:
    """`inventory.low_stock` for a product that just crossed its threshold downwards."""
    assert level.updated_at is not None
    contract = events_pb2.LowStock(
        tenant_id=level.tenant_id,
        product_id=str(level.product_id),
        available=level.available,
        reserved=level.reserved,
        low_stock_threshold=level.low_stock_threshold,
        version=level.version,
        occurred_at=timestamp(level.updated_at),
    )
    return Event(AGGREGATE, str(level.product_id), level.tenant_id, LOW_STOCK, contract)
