"""WatchStock: a product's stock now and at every committed change, until the client leaves.

Every write of a stock row notifies (repository.py); the stream follows those
notifications (kit.changes.follow) and sends the level again, read as GetStock
reads it, whenever its version grew. A quiet product's level is sent again every
`heartbeat_s` seconds, so the edge's stream idle timeout never cuts the stream and
the server finds out when its client is gone. The stream also ends when the server
drains (the hub closes): the client reconnects and gets the current level first.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.inventory.domain import StockLevel
from services.inventory.usecases import Stock
from services.kit import changes

HEARTBEAT_S = 15.0


@dataclass(frozen=True)
class StockWatch:
    """What a watch needs: the stock to read, the hub that says when to, how often to repeat."""

    stock: Stock
    hub: changes.Hub
    heartbeat_s: float = HEARTBEAT_S


async def levels(
    watch: StockWatch, tenant: str, product_id: uuid.UUID
) -> AsyncIterator[StockLevel]:
    """The product's level now, then after every change (and every heartbeat)."""
    async for level, _repeat in changes.follow(
        watch.hub,
        changes.STOCK_LEVEL,
        (tenant, str(product_id)),
        lambda: watch.stock.get(tenant, product_id),
        lambda level: level.version,
        heartbeat_s=watch.heartbeat_s,
    ):
        yield level
