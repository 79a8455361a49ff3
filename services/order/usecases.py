"""Order use cases: each one transaction, idempotent or optimistically locked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.cursor import CursorCodec, Page, TimeIdPosition, page_size, time_id_page
from services.kit.idempotency import IdempotencyStore, KeyScope
from services.kit.uow import Claim, Stored, UnitOfWork
from services.order import events, repository
from services.order.domain import Caller, NewOrder, Order

DEFAULT_PAGE = 10
MAX_PAGE = 100
# A created order is stored with its key as the order itself.
STORED_ORDER = Stored(Order.to_json, Order.from_json)


@dataclass(frozen=True)
class Created:
    order: Order
    replayed: bool


class Orders:
    """The order use cases over one database."""

    def __init__(
        self, engine: AsyncEngine, idempotency: IdempotencyStore, cursors: CursorCodec
    ) -> None:
        self._engine = engine
        self._idempotency = idempotency
        self._cursors = cursors

    async def create(self, caller: Caller, key: str, request_hash: str, new: NewOrder) -> Created:
        """Create the caller's draft, or replay the response first given for the
        caller's key (keys are per user: another user's same key is another order)."""
        claim = Claim(KeyScope(caller.tenant, caller.user), key, "orders.create", request_hash)
        async with UnitOfWork(self._engine, self._idempotency) as work:
            done = await work.idempotent(
                claim, lambda: repository.insert(work.conn, caller, new), STORED_ORDER
            )
        return Created(done.value, done.replayed)

    async def get(self, caller: Caller, order_id: uuid.UUID) -> Order:
        async with self._engine.connect() as conn:
            return await repository.get(conn, caller, order_id)

    async def confirm(
        self, caller: Caller, order_id: uuid.UUID, expected_version: int, total_cents: int | None
    ) -> Order:
        async with self._engine.begin() as conn:
            before = await repository.get(conn, caller, order_id)
            return await repository.save_transition(
                conn, before, before.confirm(expected_version, total_cents)
            )

    async def close(
        self, caller: Caller, order_id: uuid.UUID, expected_version: int | None
    ) -> Order:
        """Close and write the `orders.closed` event in one transaction."""
        async with UnitOfWork(self._engine) as work:
            before = await repository.get(work.conn, caller, order_id)
            saved = await repository.save_transition(
                work.conn, before, before.close(expected_version)
            )
            await work.outbox.add(events.closed(saved))
            return saved

    async def list(self, caller: Caller, limit: int, cursor: str) -> Page[Order]:
        """One page of the caller's visible orders newest first; the cursor is
        bound to the tenant and, for a customer, to the owner."""

        async def fetch(after: TimeIdPosition | None, n: int) -> list[Order]:
            async with self._engine.connect() as conn:
                return await repository.page(conn, caller, n, after)

        size = page_size(limit, DEFAULT_PAGE, MAX_PAGE)
        return await time_id_page(self._cursors, caller.list_scope, cursor, size, fetch)
