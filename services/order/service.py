"""Order use cases: each one transaction, idempotent or optimistically locked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import outbox
from services.kit.cursor import CursorCodec, Page, TimeIdPosition, page_size, time_id_page
from services.kit.idempotency import IdempotencyStore
from services.order import repository
from services.order.domain import CLOSED_EVENT, NewOrder, Order

DEFAULT_PAGE = 10
MAX_PAGE = 100


@dataclass(frozen=True)
class Created:
    order: Order
    replayed: bool


class Orders:
    """The order use cases over one database."""

    def __init__(self, engine: AsyncEngine, keys: IdempotencyStore, cursors: CursorCodec) -> None:
        self._engine = engine
        self._keys = keys
        self._cursors = cursors

    async def create(self, tenant: str, key: str, request_hash: str, new: NewOrder) -> Created:
        """Create a draft, or replay the response first given for this key."""
        async with self._engine.begin() as conn:
            stored = await self._keys.begin(conn, tenant, key, "orders.create", request_hash)
            if stored is not None:
                return Created(Order.from_json(stored), replayed=True)
            order = await repository.insert(conn, tenant, new)
            await self._keys.finish(conn, tenant, key, order.to_json())
        return Created(order, replayed=False)

    async def get(self, tenant: str, order_id: uuid.UUID) -> Order:
        async with self._engine.connect() as conn:
            return await repository.get(conn, tenant, order_id)

    async def confirm(
        self, tenant: str, order_id: uuid.UUID, expected_version: int, total_cents: int | None
    ) -> Order:
        async with self._engine.begin() as conn:
            before = await repository.get(conn, tenant, order_id)
            return await repository.save_transition(
                conn, before, before.confirm(expected_version, total_cents)
            )

    async def close(self, tenant: str, order_id: uuid.UUID, expected_version: int | None) -> Order:
        """Close and write the `orders.closed` event in one transaction."""
        async with self._engine.begin() as conn:
            before = await repository.get(conn, tenant, order_id)
            saved = await repository.save_transition(conn, before, before.close(expected_version))
            await outbox.add_event(
                conn,
                event_type=CLOSED_EVENT,
                tenant_id=tenant,
                order_id=saved.id,
                payload=saved.closed_event(),
            )
            return saved

    async def list(self, tenant: str, limit: int, cursor: str) -> Page[Order]:
        """One page newest first; the cursor is bound to the tenant."""

        async def fetch(after: TimeIdPosition | None, n: int) -> list[Order]:
            async with self._engine.connect() as conn:
                return await repository.page(conn, tenant, n, after)

        size = page_size(limit, DEFAULT_PAGE, MAX_PAGE)
        return await time_id_page(self._cursors, f"orders:{tenant}", cursor, size, fetch)
