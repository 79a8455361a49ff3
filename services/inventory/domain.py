"""The inventory's domain: stock levels, reservations and the rules on them (no I/O)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from services.kit import errors, ids

DEFAULT_TTL_S = 900
MAX_TTL_S = 86_400
MAX_LINES = 100


class ReservationStatus(enum.Enum):
    RESERVED = "reserved"
    RELEASED = "released"
    COMMITTED = "committed"


@dataclass(frozen=True)
class StockLevel:
    """One product's row of the ledger; version 0 and no time for a product never stocked."""

    tenant_id: str
    product_id: uuid.UUID
    available: int
    reserved: int
    low_stock_threshold: int
    version: int
    updated_at: datetime | None

    @classmethod
    def never_stocked(cls, tenant: str, product_id: uuid.UUID) -> StockLevel:
        return cls(tenant, product_id, 0, 0, 0, 0, None)

    @property
    def is_low(self) -> bool:
        return self.available <= self.low_stock_threshold


def crossed_low(before: StockLevel | None, after: StockLevel) -> bool:
    """Whether a change took the product from above its threshold to at or below it."""
    was_low = before is not None and before.is_low
    return after.is_low and not was_low


@dataclass(frozen=True)
class Line:
    product_id: uuid.UUID
    quantity: int


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    tenant_id: str
    status: ReservationStatus
    lines: tuple[Line, ...]
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


def merged_lines(raw: Iterable[tuple[str, int]]) -> tuple[Line, ...]:
    """A request's lines merged per product and sorted by product id (the order
    every transaction takes stock rows in); InvalidArgument on a bad line."""
    totals: dict[uuid.UUID, int] = {}
    for n, (product, quantity) in enumerate(raw):
        product_id = ids.parse_uuid(product, f"lines[{n}].productId")
        if quantity < 1:
            raise errors.InvalidArgument.field(f"lines[{n}].quantity", "must be at least 1")
        totals[product_id] = totals.get(product_id, 0) + quantity
    if not totals:
        raise errors.InvalidArgument.field("lines", "at least one line is required")
    if len(totals) > MAX_LINES:
        raise errors.InvalidArgument.field("lines", f"at most {MAX_LINES} products")
    return tuple(Line(p, q) for p, q in sorted(totals.items()))


def ttl_seconds(requested: int) -> int:
    """The hold time asked for: 0 means the default; otherwise 1..MAX_TTL_S."""
    if requested == 0:
        return DEFAULT_TTL_S
    if not 0 < requested <= MAX_TTL_S:
        raise errors.InvalidArgument.field("ttlSeconds", f"must be 1-{MAX_TTL_S}, or 0 for 900")
    return requested


def restock_values(available: int, threshold: int) -> tuple[int, int]:
    if available < 0:
        raise errors.InvalidArgument.field("available", "must be 0 or more")
    if threshold < 0:
        raise errors.InvalidArgument.field("lowStockThreshold", "must be 0 or more")
    return available, threshold


def check_version(current: StockLevel | None, expected: int) -> None:
    """The optimistic lock; StaleVersion with the current version when it moved on."""
    version = 0 if current is None else current.version
    if version != expected:
        raise errors.StaleVersion(version)


class ReservationNotFound(errors.NotFound):
    def __init__(self) -> None:
        super().__init__("reservation not found")


def settled_already(found: Reservation | None, wanted: ReservationStatus) -> Reservation:
    """A reservation that was not live when asked to become `wanted`: the same
    result again when it already is (a repeat), else why not."""
    if found is None:
        raise ReservationNotFound()
    if found.status is wanted:
        return found
    raise errors.InvalidTransition(f"reservation is {found.status.value}, not reserved")
