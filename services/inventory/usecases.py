"""Inventory use cases: each one transaction (a unit of work) on the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.inventory import events, repository
from services.inventory.domain import (
    Line,
    Reservation,
    ReservationNotFound,
    ReservationStatus,
    StockLevel,
    check_version,
    crossed_low,
    restock_values,
    settled_already,
)
from services.inventory.upstreams import Catalogue, Warehouse
from services.kit import audit, context, db, errors
from services.kit.cursor import CursorCodec, page_size
from services.kit.idempotency import IdempotencyStore, KeyScope
from services.kit.uow import Claim, Stored, UnitOfWork, Work

log = logging.getLogger(__name__)

DEFAULT_PAGE = 20
MAX_PAGE = 100
# Who the inventory's own background jobs are in the audit log.
REAPER = "service:inventory-reaper"
SYNC = "service:inventory-sync"


def _level_json(level: StockLevel | None) -> dict[str, object] | None:
    if level is None or level.version == 0:
        return None
    return {
        "available": level.available,
        "reserved": level.reserved,
        "low_stock_threshold": level.low_stock_threshold,
        "version": level.version,
    }


async def _audit_level(
    work: Work,
    action: str,
    before: StockLevel | None,
    after: StockLevel,
    actor: str | None = None,
) -> None:
    await work.audit.record(
        tenant=after.tenant_id,
        entity_type="stock",
        entity_id=str(after.product_id),
        action=f"stock.{action}",
        before=_level_json(before),
        after=_level_json(after),
        actor=actor,
    )


async def _audit_reservation(
    work: Work,
    action: str,
    before: ReservationStatus | None,
    after: Reservation,
    actor: str | None = None,
) -> None:
    lines = [[str(line.product_id), line.quantity] for line in after.lines]
    await work.audit.record(
        tenant=after.tenant_id,
        entity_type="reservation",
        entity_id=str(after.id),
        action=f"reservation.{action}",
        before=None if before is None else {"status": before.value, "lines": lines},
        after={"status": after.status.value, "lines": lines},
        actor=actor,
    )


def _dump_level(level: StockLevel) -> dict[str, object]:
    return {
        "tenant_id": level.tenant_id,
        "product_id": str(level.product_id),
        "available": level.available,
        "reserved": level.reserved,
        "low_stock_threshold": level.low_stock_threshold,
        "version": level.version,
        "updated_at": None if level.updated_at is None else level.updated_at.isoformat(),
    }


def _load_level(data: dict[str, object]) -> StockLevel:
    moment = data["updated_at"]
    return StockLevel(
        tenant_id=str(data["tenant_id"]),
        product_id=uuid.UUID(str(data["product_id"])),
        available=int(str(data["available"])),
        reserved=int(str(data["reserved"])),
        low_stock_threshold=int(str(data["low_stock_threshold"])),
        version=int(str(data["version"])),
        updated_at=None if moment is None else datetime.fromisoformat(str(moment)),
    )


STORED_LEVEL = Stored(_dump_level, _load_level)


@dataclass(frozen=True)
class Restocked:
    level: StockLevel
    replayed: bool


@dataclass(frozen=True)
class LowStockPage:
    items: list[StockLevel]
    next_cursor: str | None


class Stock:
    """Reading and setting stock levels."""

    def __init__(self, engine: AsyncEngine, keys: IdempotencyStore, cursors: CursorCodec) -> None:
        self._engine = engine
        self._idempotency = keys
        self._cursors = cursors

    async def get(self, tenant: str, product_id: uuid.UUID) -> StockLevel:
        async with db.reads(self._engine).connect() as conn:
            found = await repository.get_stock(conn, tenant, product_id)
        return found or StockLevel.never_stocked(tenant, product_id)

    async def low_stock(self, tenant: str, limit: int, cursor: str) -> LowStockPage:
        """One page of the tenant's low products by product id; the cursor is bound to the tenant."""
        size = page_size(limit, DEFAULT_PAGE, MAX_PAGE)
        scope = f"{tenant}:low-stock"
        after = None
        if cursor:
            try:
                after = uuid.UUID(self._cursors.decode(scope, cursor)["id"])
            except (KeyError, ValueError):
                raise errors.InvalidArgument.field(
                    "cursor", "is not a cursor this list issued"
                ) from None
        async with db.reads(self._engine).connect() as conn:
            found = await repository.low_stock_page(conn, tenant, size + 1, after)
        if len(found) <= size:
            return LowStockPage(found, None)
        last = found[size - 1]
        return LowStockPage(found[:size], self._cursors.encode(scope, {"id": str(last.product_id)}))

    async def restock(
        self,
        tenant: str,
        user: str,
        key: str,
        request_hash: str,
        product_id: uuid.UUID,
        expected_version: int,
        available: int,
        threshold: int,
    ) -> Restocked:
        """Set available and threshold at `expected_version` (0: not stocked yet),
        idempotent by the caller's key; `inventory.low_stock` when it crosses."""
        available, threshold = restock_values(available, threshold)
        claim = Claim(KeyScope(tenant, user), key, "inventory.restock", request_hash)

        async def effect(work: Work) -> StockLevel:
            before = await repository.get_stock(work.conn, tenant, product_id, for_update=True)
            check_version(before, expected_version)
            after = await repository.set_stock(
                work.conn, tenant, product_id, available, threshold, before
            )
            await _audit_level(work, "restock", before, after)
            if crossed_low(before, after):
                await work.outbox.add(events.low_stock(after))
            return after

        async with UnitOfWork(self._engine, self._idempotency) as work:
            done = await work.idempotent(claim, lambda: effect(work), STORED_LEVEL)
        return Restocked(done.value, done.replayed)


class Reservations:
    """Reserving, releasing and committing stock, and reaping expired reservations."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def reserve(
        self, tenant: str, reservation_id: uuid.UUID, lines: Sequence[Line], ttl_s: int
    ) -> Reservation:
        """Reserve every line (merged, sorted) or none; the stored reservation when
        the id exists with the same lines."""
        async with UnitOfWork(self._engine) as work:
            # One statement (repository.reserve) writes the reservation, its lines and
            # its audit row and takes the stock. It also sets synchronous_commit off:
            # the stock rows stay locked from their update to the commit, so the commit
            # does not wait for its WAL flush, and a hot product is not limited to one
            # reservation per disk flush. Nothing is lost that matters: the order that
            # holds the reservation commits synchronously afterwards, and flushing its
            # commit flushes the WAL up to it, this reservation included; a crash before
            # that loses a reservation whose order was never written.
            audit_after = json.dumps(
                {
                    "status": ReservationStatus.RESERVED.value,
                    "lines": [[str(line.product_id), line.quantity] for line in lines],
                }
            )
            done = await repository.reserve(
                work.conn,
                tenant,
                reservation_id,
                lines,
                ttl_s,
                actor=audit.current_actor(),
                request_id=context.request_id.get() or None,
                audit_after=audit_after,
            )
            if done is None:
                return await self._existing(work, tenant, reservation_id, lines)
            created, taken = done
            if len(taken) < len(lines):
                # Raising rolls the whole statement's writes back: nothing stays reserved.
                got = {level.product_id for level in taken}
                names = ", ".join(
                    str(line.product_id) for line in lines if line.product_id not in got
                )
                raise errors.InsufficientStock(f"insufficient stock for {names}")
            quantities = {line.product_id: line.quantity for line in lines}
            for after in taken:
                taken_units = quantities[after.product_id]
                before = replace(
                    after, available=after.available + taken_units, version=after.version - 1
                )
                if crossed_low(before, after):
                    await work.outbox.add(events.low_stock(after))
            return created

    async def _existing(
        self, work: Work, tenant: str, reservation_id: uuid.UUID, lines: Sequence[Line]
    ) -> Reservation:
        found = await repository.get_reservation(work.conn, tenant, reservation_id)
        if found is None:  # deleted between the insert and this read: not kept today
            raise ReservationNotFound()
        if found.lines != tuple(lines):
            raise errors.AlreadyExists("reservation id is taken by a reservation with other lines")
        return found

    async def release(self, tenant: str, reservation_id: uuid.UUID) -> Reservation:
        return await self._settle(tenant, reservation_id, ReservationStatus.RELEASED)

    async def commit(self, tenant: str, reservation_id: uuid.UUID) -> Reservation:
        return await self._settle(tenant, reservation_id, ReservationStatus.COMMITTED)

    async def _settle(
        self, tenant: str, reservation_id: uuid.UUID, to: ReservationStatus
    ) -> Reservation:
        async with UnitOfWork(self._engine) as work:
            moved = await repository.move(work.conn, tenant, reservation_id, to)
            if moved is None:
                found = await repository.get_reservation(work.conn, tenant, reservation_id)
                return settled_already(found, to)
            await repository.settle(
                work.conn,
                ((tenant, line) for line in moved.lines),
                back_to_available=to is ReservationStatus.RELEASED,
            )
            await _audit_reservation(work, to.value, ReservationStatus.RESERVED, moved)
            return moved

    async def extend(self, tenant: str, reservation_id: uuid.UUID, ttl_s: int) -> Reservation:
        """Hold a live reservation `ttl_s` from now; InvalidTransition once it is not live."""
        async with UnitOfWork(self._engine) as work:
            extended = await repository.extend(work.conn, tenant, reservation_id, ttl_s)
            if extended is not None:
                return extended
            found = await repository.get_reservation(work.conn, tenant, reservation_id)
            return settled_already(found, ReservationStatus.RESERVED)

    async def get(self, tenant: str, reservation_id: uuid.UUID) -> Reservation:
        async with db.reads(self._engine).connect() as conn:
            found = await repository.get_reservation(conn, tenant, reservation_id)
        if found is None:
            raise ReservationNotFound()
        return found

    async def reap_once(self, batch: int, now: datetime | None = None) -> int:
        """Release up to `batch` expired live reservations in one transaction; how many.

        The hook for the order pipeline's "never one being charged": it
        `extend`s a reservation before charging and commits it after; the
        reaper only takes rows it can lock (SKIP LOCKED), so one an extend,
        release or commit holds is left alone, and an extend that lands after
        the reaper's release is refused as not live."""
        async with UnitOfWork(self._engine) as work:
            expired = await repository.lock_expired(work.conn, batch, now)
            held: list[tuple[str, Line]] = []
            for tenant, reservation_id in expired:
                moved = await repository.move(
                    work.conn, tenant, reservation_id, ReservationStatus.RELEASED
                )
                if moved is not None:
                    held.extend((tenant, line) for line in moved.lines)
                    await _audit_reservation(
                        work, "expire", ReservationStatus.RESERVED, moved, actor=REAPER
                    )
            await repository.settle(work.conn, held, back_to_available=True)
        return len(expired)

    async def reap(self, stop: asyncio.Event, interval_s: float, batch: int) -> None:
        """Reap until `stop`: a full batch is followed at once by the next."""
        while not stop.is_set():
            try:
                reaped = await self.reap_once(batch)
            except Exception:
                log.exception("reaping expired reservations failed")
                reaped = 0
            if reaped:
                log.info("released %d expired reservations", reaped)
            if reaped >= batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


@dataclass(frozen=True)
class Synced:
    products: int
    changed: int


class StockSync:
    """Keeps each product's available + reserved equal to the Warehouse's units."""

    def __init__(
        self, engine: AsyncEngine, catalogue: Catalogue, warehouse: Warehouse, threshold: int
    ) -> None:
        self._engine = engine
        self._catalogue = catalogue
        self._warehouse = warehouse
        self._threshold = threshold

    async def sync(self, tenant: str) -> Synced:
        """One tenant's catalogue against the Warehouse, in one transaction, rows in
        product id order; `inventory.low_stock` for every product that crosses."""
        products = sorted(await self._catalogue.products(tenant), key=lambda p: p.product_id)
        units = await self._warehouse.available(tenant, [p.sku for p in products])
        changed = 0
        async with UnitOfWork(self._engine) as work:
            for product in products:
                before, after = await repository.sync_on_hand(
                    work.conn,
                    tenant,
                    product.product_id,
                    units.get(product.sku, 0),
                    self._threshold,
                )
                if after is None:
                    continue
                changed += 1
                await _audit_level(work, "sync", before, after, actor=SYNC)
                if crossed_low(before, after):
                    await work.outbox.add(events.low_stock(after))
        return Synced(len(products), changed)

    async def run(self, stop: asyncio.Event, tenants: Sequence[str], interval_s: float) -> None:
        """Sync every tenant now, then every `interval_s` (0: once) until `stop`."""
        while not stop.is_set():
            for tenant in tenants:
                try:
                    done = await self.sync(tenant)
                    log.info(
                        "stock synced",
                        extra={
                            "tenant": tenant,
                            "products": done.products,
                            "changed": done.changed,
                        },
                    )
                except Exception:
                    log.exception("stock sync failed", extra={"tenant": tenant})
            if interval_s <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
