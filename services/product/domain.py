"""The product gateway's domain: products as the ERP holds them, stock as the
Warehouse counts it, and the merged view clients read. Plain Python."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.kit import errors, ids

SKU_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,63}$")
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_PRICE_CENTS = 2**31 - 1


class ProductNotFound(errors.NotFound):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"product {product_id} not found")


class StaleProductVersion(errors.StaleVersion):
    """If-Match named an old version; `current` (when known) goes to the client
    as `currentVersion`, as for orders and users."""

    def __init__(self, expected: int, current: int | None = None) -> None:
        super().__init__(
            current,
            f"stale version: the product is no longer at version {expected}; read it again",
        )


def parse_id(raw: str) -> str:
    """The canonical form of a product id (a UUID)."""
    return str(ids.parse_uuid(raw))


@dataclass(frozen=True)
class ProductDraft:
    """What a client asks the ERP to store; validated on construction. `sku`
    is None on an update: a product's SKU never changes."""

    sku: str | None
    name: str
    description: str
    price_cents: int | None

    def __post_init__(self) -> None:
        problems: list[errors.FieldViolation] = []
        if self.sku is not None and not SKU_PATTERN.match(self.sku):
            problems.append(
                errors.FieldViolation(
                    "sku",
                    "must be 1-64 capital letters, digits or '-', starting with a letter or digit",
                )
            )
        if not self.name.strip() or len(self.name) > MAX_NAME:
            problems.append(errors.FieldViolation("name", f"must be 1-{MAX_NAME} characters"))
        if len(self.description) > MAX_DESCRIPTION:
            problems.append(
                errors.FieldViolation(
                    "description", f"must be at most {MAX_DESCRIPTION} characters"
                )
            )
        if self.price_cents is None:
            problems.append(errors.FieldViolation("priceCents", "is required"))
        elif not 0 <= self.price_cents <= MAX_PRICE_CENTS:
            problems.append(errors.FieldViolation("priceCents", "must be 0 or more"))
        if problems:
            message = "; ".join(f"{p.field}: {p.description}" for p in problems)
            raise errors.InvalidArgument(message, violations=tuple(problems))


@dataclass(frozen=True)
class Product:
    """A product as the ERP holds it."""

    id: str
    sku: str
    name: str
    description: str
    price_cents: int
    version: int
    deleted: bool
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["updated_at"] = self.updated_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Product:
        return cls(
            **{
                **data,
                "created_at": datetime.fromisoformat(data["created_at"]),
                "updated_at": datetime.fromisoformat(data["updated_at"]),
            }
        )


@dataclass(frozen=True)
class Stock:
    """The Warehouse's figures for one SKU; `updated_at` None: never stocked."""

    sku: str
    on_hand: int
    reserved: int
    available: int
    updated_at: datetime | None


class Availability(StrEnum):
    IN_STOCK = "in_stock"
    LOW_STOCK = "low_stock"
    OUT_OF_STOCK = "out_of_stock"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ProductView:
    """A product merged with its stock. `stock` is None only when the
    Warehouse could not say (v2 reports "unknown"; v1 never sees such a view).
    `stale`: part of it was served past its TTL because an upstream failed."""

    product: Product
    stock: Stock | None
    stale: bool

    def availability(self, low_stock_threshold: int) -> Availability:
        if self.stock is None:
            return Availability.UNKNOWN
        if self.stock.available <= 0:
            return Availability.OUT_OF_STOCK
        if self.stock.available <= low_stock_threshold:
            return Availability.LOW_STOCK
        return Availability.IN_STOCK
