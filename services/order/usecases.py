"""Order use cases: each one transaction, idempotent or optimistically locked."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors
from services.kit.cursor import CursorCodec, Page, TimeIdPosition, page_size, time_id_page
from services.kit.idempotency import IdempotencyStore, KeyScope
from services.kit.uow import Claim, Stored, UnitOfWork
from services.order import compensation, events, repository, transitions
from services.order.compensation import CancelOutcome
from services.order.domain import (
    Caller,
    LineItem,
    NewOrder,
    NewPlacement,
    Order,
    OrderFilter,
    OrderStatus,
    StatusChange,
)
from services.order.stock import Reservations
from services.order.upstreams import Catalogue

log = logging.getLogger(__name__)

DEFAULT_PAGE = 10
MAX_PAGE = 100
# A created order is stored with its key as the order itself.
STORED_ORDER = Stored(Order.to_json, Order.from_json)


@dataclass(frozen=True)
class Created:
    order: Order
    replayed: bool


@dataclass(frozen=True)
class StatusView:
    order: Order
    history: list[StatusChange]


class Orders:
    """The order use cases over one database, the catalogue and the stock."""

    def __init__(
        self,
        engine: AsyncEngine,
        idempotency: IdempotencyStore,
        cursors: CursorCodec,
        catalogue: Catalogue,
        stock: Reservations,
    ) -> None:
        self._engine = engine
        self._idempotency = idempotency
        self._cursors = cursors
        self._catalogue = catalogue
        self._stock = stock

    async def place(
        self, caller: Caller, key: str, request_hash: str, new: NewPlacement
    ) -> Created:
        """Place the caller's order from the catalogue, or replay the first response to
        the caller's key.

        Names and prices are the catalogue's now (the order keeps them). The stock is
        reserved before the order is written, in the order's id: a product short of
        units is errors.InsufficientStock (409) and nothing is written. When the
        inventory does not answer, the order is accepted as `pending` and the
        pipeline reserves it. The payment is the pipeline's: placement never waits
        on the provider.
        """
        stock, catalogue = self._stock, self._catalogue
        found = await catalogue.products(caller.tenant, [w.product_id for w in new.lines])
        lines: list[LineItem] = []
        for n, wanted in enumerate(new.lines):
            product = found.get(wanted.product_id)
            if product is None:
                raise errors.InvalidArgument.field(
                    f"items[{n}].productId", "no such product in the catalogue"
                )
            lines.append(
                LineItem(
                    product.sku, wanted.quantity, product.price_cents, product.id, product.name
                )
            )
        if sum(i.quantity * i.unit_price_cents for i in lines) > 2**31 - 1:
            raise errors.InvalidArgument.field("items", "the order total is too large")
        claim = Claim(KeyScope(caller.tenant, caller.user), key, "orders.place", request_hash)
        async with UnitOfWork(self._engine, self._idempotency) as work:

            async def effect() -> Order:
                order_id = uuid.uuid4()
                status = OrderStatus.RESERVED
                try:
                    await stock.reserve(caller.tenant, order_id, new.merged())
                except (errors.Unavailable, errors.DeadlineExceeded) as exc:
                    log.warning("inventory unavailable; order accepted as pending: %s", exc)
                    status = OrderStatus.PENDING
                try:
                    order = Order.placed_new(
                        caller.tenant,
                        caller.user,
                        order_id,
                        new.customer_ref,
                        lines,
                        status,
                        await work.now(),
                    )
                    # The order, its lines, its records and the stored response: one statement.
                    rows: list[db.Write] = [
                        *repository.placed_rows(order),
                        work.response_row(order),
                    ]
                    return await transitions.placed(work, order, actor=caller.user, with_rows=rows)
                except BaseException:
                    if status is OrderStatus.RESERVED:
                        await _release_quietly(stock, caller.tenant, order_id)
                    raise

            done = await work.idempotent(claim, effect, STORED_ORDER)
        return Created(done.value, done.replayed)

    async def cancel(
        self,
        caller: Caller,
        order_id: uuid.UUID,
        reason: str | None,
        expected_version: int | None,
    ) -> CancelOutcome:
        """Cancel a placed order with compensation (services.order.compensation)."""
        return await compensation.cancel(
            self._engine, caller, order_id, reason=reason, expected_version=expected_version
        )

    async def set_status(
        self,
        caller: Caller,
        order_id: uuid.UUID,
        to: OrderStatus,
        reason: str | None,
        expected_version: int | None,
    ) -> CancelOutcome:
        """An admin's move along the machine (services.order.compensation)."""
        return await compensation.admin_move(
            self._engine,
            caller,
            order_id,
            to,
            stock=self._stock,
            reason=reason,
            expected_version=expected_version,
        )

    async def status(self, caller: Caller, order_id: uuid.UUID) -> StatusView:
        async with db.reads(self._engine).connect() as conn:
            order = await repository.get(conn, caller, order_id)
            return StatusView(order, await repository.status_history(conn, order_id))

    async def list_all(
        self, caller: Caller, filters: OrderFilter, limit: int, cursor: str
    ) -> Page[Order]:
        """One page of the tenant's orders (an admin's list) within the filters; the
        cursor is bound to the tenant and the filters."""

        async def fetch(after: TimeIdPosition | None, n: int) -> list[Order]:
            async with db.reads(self._engine).connect() as conn:
                return await repository.page(conn, caller, n, after, filters)

        size = page_size(limit, DEFAULT_PAGE, MAX_PAGE)
        scope = f"{caller.list_scope}:{filters.scope}"
        return await time_id_page(self._cursors, scope, cursor, size, fetch)

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
        async with db.reads(self._engine).connect() as conn:
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
            async with db.reads(self._engine).connect() as conn:
                return await repository.page(conn, caller, n, after)

        size = page_size(limit, DEFAULT_PAGE, MAX_PAGE)
        return await time_id_page(self._cursors, caller.list_scope, cursor, size, fetch)


async def _release_quietly(stock: Reservations, tenant: str, order_id: uuid.UUID) -> None:
    """Give back a reservation whose order was not written; the reaper is the backstop."""
    try:
        await asyncio.shield(stock.release(tenant, order_id))
    except Exception as exc:  # the reaper releases it at its expiry
        log.warning("could not release the reservation of an unwritten order: %s", exc)
