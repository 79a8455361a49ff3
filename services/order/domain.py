"""Orders: states, transitions, ownership and validation. Plain Python, no gRPC, no SQL.

    draft --confirm(total)--> confirmed --close--> closed

Every change bumps `version`; a change names the version it expects and a
mismatch is errors.StaleVersion (the optimistic lock).

An order belongs to the user who placed it. A customer reads, changes and
lists only their own orders; anyone else's is "not found", exactly like
another tenant's, so ids leak nothing. A tenant-wide caller (the tenant's
admin, or an internal service acting with the admin role) sees them all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.kit import errors

MAX_ITEMS = 100
MAX_QUANTITY = 10_000
MAX_CENTS = 2**31 - 1
MAX_SKU = 64
MAX_CUSTOMER_REF = 128
MAX_USER_ID = 128


class OrderStatus(StrEnum):
    DRAFT = "draft"
    CONFIRMED = "confirmed"
    CLOSED = "closed"


class OrderNotFound(errors.NotFound):
    def __init__(self) -> None:
        super().__init__("order not found")


@dataclass(frozen=True)
class Caller:
    """Who acts on orders: a verified user of one tenant; `tenant_wide` when
    they may see and change every order of the tenant, not only their own."""

    tenant: str
    user: str
    tenant_wide: bool

    def __post_init__(self) -> None:
        # The edge forwards the token's `sub`; direct callers set it themselves.
        if not 0 < len(self.user) <= MAX_USER_ID or not self.user.isprintable():
            raise errors.Unauthenticated("the caller's user id is not valid")

    @property
    def owner(self) -> str | None:
        """The one owner whose orders this caller may touch; None when tenant-wide."""
        return None if self.tenant_wide else self.user

    @property
    def list_scope(self) -> str:
        """What a list cursor is bound to: the tenant, and the owner for a customer."""
        return f"orders:{self.tenant}" if self.tenant_wide else f"orders:{self.tenant}:{self.user}"


@dataclass(frozen=True)
class LineItem:
    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class NewOrder:
    """What a client may send to create an order."""

    customer_ref: str | None
    items: tuple[LineItem, ...]

    def __post_init__(self) -> None:
        if self.customer_ref is not None and not 0 < len(self.customer_ref) <= MAX_CUSTOMER_REF:
            raise errors.InvalidArgument.field(
                "customerRef", f"must be 1-{MAX_CUSTOMER_REF} characters"
            )
        if len(self.items) > MAX_ITEMS:
            raise errors.InvalidArgument.field("items", f"at most {MAX_ITEMS} lines")
        for n, item in enumerate(self.items):
            if not 0 < len(item.sku.strip()) <= MAX_SKU:
                raise errors.InvalidArgument.field(
                    f"items[{n}].sku", f"must be 1-{MAX_SKU} characters"
                )
            if not 0 < item.quantity <= MAX_QUANTITY:
                raise errors.InvalidArgument.field(
                    f"items[{n}].quantity", f"must be 1-{MAX_QUANTITY}"
                )
            if item.unit_price_cents < 0:
                raise errors.InvalidArgument.field(
                    f"items[{n}].unitPriceCents", "must be 0 or more"
                )
        if self.items_total() > MAX_CENTS:
            raise errors.InvalidArgument.field("items", "the order total is too large")

    def items_total(self) -> int:
        return sum(i.quantity * i.unit_price_cents for i in self.items)


@dataclass(frozen=True)
class Order:
    id: uuid.UUID
    tenant_id: str
    # None only for orders placed before orders had owners: admins-only.
    user_id: str | None
    status: OrderStatus
    version: int
    total_cents: int | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    customer_ref: str | None
    items: tuple[LineItem, ...]

    def _expect(self, version: int | None) -> None:
        if version is not None and version != self.version:
            raise errors.StaleVersion(self.version)

    def _require(self, status: OrderStatus, action: str) -> None:
        if self.status is not status:
            raise errors.InvalidTransition(
                f"cannot {action} an order that is {self.status.value}; it must be {status.value}",
                metadata={"status": self.status.value},
            )

    def confirm(self, expected_version: int, total_cents: int | None) -> Order:
        """The confirmed order; the total defaults to, and must match, the items' sum."""
        self._expect(expected_version)
        self._require(OrderStatus.DRAFT, "confirm")
        items_total = NewOrder(self.customer_ref, self.items).items_total()
        if total_cents is None:
            if not self.items:
                raise errors.InvalidArgument.field("totalCents", "is required")
            total_cents = items_total
        if not 0 <= total_cents <= MAX_CENTS:
            raise errors.InvalidArgument.field("totalCents", "must be 0 or more")
        if self.items and total_cents != items_total:
            raise errors.InvalidArgument.field(
                "totalCents", f"must equal the sum of the items ({items_total})"
            )
        return replace(self, status=OrderStatus.CONFIRMED, total_cents=total_cents)

    def close(self, expected_version: int | None) -> Order:
        """The closed order."""
        self._expect(expected_version)
        self._require(OrderStatus.CONFIRMED, "close")
        return replace(self, status=OrderStatus.CLOSED)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe snapshot (stored for idempotent replay)."""
        return {
            "id": str(self.id),
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "status": self.status.value,
            "version": self.version,
            "total_cents": self.total_cents,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "customer_ref": self.customer_ref,
            "items": [[i.sku, i.quantity, i.unit_price_cents] for i in self.items],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Order:
        """The order a `to_json` snapshot describes."""
        return cls(
            id=uuid.UUID(data["id"]),
            tenant_id=data["tenant_id"],
            user_id=data["user_id"],
            status=OrderStatus(data["status"]),
            version=data["version"],
            total_cents=data["total_cents"],
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
            closed_at=datetime.fromisoformat(data["closed_at"]) if data["closed_at"] else None,
            customer_ref=data["customer_ref"],
            items=tuple(LineItem(*i) for i in data["items"]),
        )
