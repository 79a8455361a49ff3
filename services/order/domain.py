"""Orders: states, transitions, ownership and validation. Plain Python, no gRPC, no SQL.

Drafts (seed 001), moved by their owner:

    draft --confirm(total)--> confirmed --close--> closed

Placed orders (catalogue lines, stock reserved), moved by the order pipeline,
the customer's cancel and the tenant's admins, along `TRANSITIONS` only:

    pending -> reserved -> paid -> fulfilled
       |          |          |
       +-> failed +-> failed  +-> cancelled -> refunded
       +-> cancelled  +-> cancelled

Every change bumps `version`; a change names the version it expects and a
mismatch is errors.StaleVersion (the optimistic lock). A move the machine does
not allow is errors.InvalidTransition (409); a move to the status the order
already has is a repeat (`Order.already`), which a redelivered message treats
as done.

An order belongs to the user who placed it. A customer reads, changes and
lists only their own orders; anyone else's is "not found", exactly like
another tenant's, so ids leak nothing. A tenant-wide caller (the tenant's
admin, or an internal service acting with the admin role) sees them all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
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


MAX_REASON = 500


class OrderStatus(StrEnum):
    DRAFT = "draft"
    CONFIRMED = "confirmed"
    CLOSED = "closed"
    PENDING = "pending"
    RESERVED = "reserved"
    PAID = "paid"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    FAILED = "failed"
    REFUNDED = "refunded"


S = OrderStatus
# The placed orders' state machine: every allowed move.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.RESERVED, S.FAILED, S.CANCELLED}),
    S.RESERVED: frozenset({S.PAID, S.FAILED, S.CANCELLED}),
    S.PAID: frozenset({S.FULFILLED, S.CANCELLED}),
    S.CANCELLED: frozenset({S.REFUNDED}),
}
# Statuses after which nothing more happens to an order. A cancelled order is
# final unless it had been charged: then `refunded` follows.
TERMINAL = frozenset({S.FULFILLED, S.FAILED, S.REFUNDED, S.CLOSED})
PLACED = frozenset({S.PENDING, S.RESERVED, S.PAID, S.FULFILLED, S.CANCELLED, S.FAILED, S.REFUNDED})
# What an admin may set by hand (PUT /v1/admin/orders/{id}/status): fulfil a paid
# order, or cancel or fail one before fulfilment. Paid and refunded follow money
# the provider moved, so only the pipeline sets them.
ADMIN_TARGETS = frozenset({S.FULFILLED, S.CANCELLED, S.FAILED})


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
    # Placed orders: the catalogue product and its name when the order was placed.
    product_id: uuid.UUID | None = None
    name: str | None = None


@dataclass(frozen=True)
class Wanted:
    """A placed order's line as the client sends it: a product and how many."""

    product_id: uuid.UUID
    quantity: int


@dataclass(frozen=True)
class NewPlacement:
    """What a client may send to place an order from the catalogue."""

    customer_ref: str | None
    lines: tuple[Wanted, ...]

    def __post_init__(self) -> None:
        if self.customer_ref is not None and not 0 < len(self.customer_ref) <= MAX_CUSTOMER_REF:
            raise errors.InvalidArgument.field(
                "customerRef", f"must be 1-{MAX_CUSTOMER_REF} characters"
            )
        if not self.lines:
            raise errors.InvalidArgument.field("items", "at least one line")
        if len(self.lines) > MAX_ITEMS:
            raise errors.InvalidArgument.field("items", f"at most {MAX_ITEMS} lines")
        for n, line in enumerate(self.lines):
            if not 0 < line.quantity <= MAX_QUANTITY:
                raise errors.InvalidArgument.field(
                    f"items[{n}].quantity", f"must be 1-{MAX_QUANTITY}"
                )
        if sum(line.quantity for line in self.lines) > MAX_QUANTITY:
            raise errors.InvalidArgument.field(
                "items", f"at most {MAX_QUANTITY} units in one order"
            )

    def merged(self) -> dict[uuid.UUID, int]:
        """Units per product (a product on two lines is one reservation line)."""
        return units_per_product((line.product_id, line.quantity) for line in self.lines)


def units_per_product(lines: Iterable[tuple[uuid.UUID, int]]) -> dict[uuid.UUID, int]:
    """Units per product of (product, quantity) lines: what one reservation holds."""
    units: dict[uuid.UUID, int] = {}
    for product_id, quantity in lines:
        units[product_id] = units.get(product_id, 0) + quantity
    return units


def check_reason(reason: str | None, field: str = "reason") -> str | None:
    if reason is not None and not 0 < len(reason) <= MAX_REASON:
        raise errors.InvalidArgument.field(field, f"must be 1-{MAX_REASON} characters")
    return reason


def parse_status(value: str, field: str = "status") -> OrderStatus:
    """A status named by a client; INVALID_ARGUMENT naming the known ones otherwise."""
    try:
        return OrderStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in OrderStatus)
        raise errors.InvalidArgument.field(field, f"must be one of {known}") from None


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
class StatusChange:
    """One move in an order's history."""

    from_status: OrderStatus | None
    to_status: OrderStatus
    version: int
    at: datetime
    reason: str | None


@dataclass(frozen=True)
class OrderFilter:
    """The admin list's filters: one status, and a creation window [from, to)."""

    status: OrderStatus | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def __post_init__(self) -> None:
        if (
            self.created_from is not None
            and self.created_to is not None
            and self.created_to <= self.created_from
        ):
            raise errors.InvalidArgument.field("createdTo", "must be after createdFrom")

    @property
    def scope(self) -> str:
        """What a cursor for this list is bound to, beside the caller's scope."""
        parts = [
            self.status.value if self.status else "",
            self.created_from.isoformat() if self.created_from else "",
            self.created_to.isoformat() if self.created_to else "",
        ]
        return "|".join(parts)


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
    # Placed orders only.
    failure_reason: str | None = None
    cancel_requested: bool = False
    payment_status: str | None = None  # the latest charge attempt's, when there is one

    @classmethod
    def placed_new(
        cls,
        tenant: str,
        user: str | None,
        order_id: uuid.UUID,
        customer_ref: str | None,
        lines: Iterable[LineItem],
        status: OrderStatus,
        at: datetime,
    ) -> Order:
        """A just-placed order at version 1: catalogue lines, the total their sum."""
        items = tuple(lines)
        return cls(
            id=order_id,
            tenant_id=tenant,
            user_id=user,
            status=status,
            version=1,
            total_cents=sum(i.quantity * i.unit_price_cents for i in items),
            created_at=at,
            updated_at=at,
            closed_at=None,
            customer_ref=customer_ref,
            items=items,
        )

    @property
    def placed(self) -> bool:
        return self.status in PLACED

    def units(self) -> dict[uuid.UUID, int]:
        """Units per catalogue product: what the order's reservation holds."""
        return units_per_product(
            (i.product_id, i.quantity) for i in self.items if i.product_id is not None
        )

    @property
    def terminal(self) -> bool:
        """Nothing more happens to it (a cancelled order only when no charge went through)."""
        if self.status is S.CANCELLED:
            # Money moved (captured, or refunded but not yet recorded on the order):
            # `refunded` still follows.
            return self.payment_status in (None, "declined", "failed")
        return self.status in TERMINAL

    def already(self, status: OrderStatus) -> bool:
        """The order has this status: a repeated move is done, not an error."""
        return self.status is status

    def move(
        self,
        to: OrderStatus,
        expected_version: int | None = None,
        failure_reason: str | None = None,
    ) -> Order:
        """The order after an allowed move of the placed orders' machine; InvalidTransition
        (409) for any other, StaleVersion when `expected_version` is not current."""
        self.expect_version(expected_version)
        if to not in TRANSITIONS.get(self.status, frozenset()):
            raise errors.InvalidTransition(
                f"an order that is {self.status.value} cannot become {to.value}",
                metadata={"status": self.status.value},
            )
        return replace(
            self,
            status=to,
            failure_reason=failure_reason if to is S.FAILED else self.failure_reason,
            cancel_requested=False if to in (S.CANCELLED, S.FAILED) else self.cancel_requested,
        )

    def expect_version(self, version: int | None) -> None:
        """StaleVersion unless `version` is None or the order's (the optimistic lock)."""
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
        self.expect_version(expected_version)
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
        self.expect_version(expected_version)
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
            "items": [_line_json(i) for i in self.items],
            "failure_reason": self.failure_reason,
            "cancel_requested": self.cancel_requested,
            "payment_status": self.payment_status,
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
            items=tuple(_line_from_json(i) for i in data["items"]),
            failure_reason=data.get("failure_reason"),
            cancel_requested=bool(data.get("cancel_requested")),
            payment_status=data.get("payment_status"),
        )


def _line_json(item: LineItem) -> list[Any]:
    plain: list[Any] = [item.sku, item.quantity, item.unit_price_cents]
    if item.product_id is None:
        return plain  # seed 001's stored shape, unchanged
    return [*plain, str(item.product_id), item.name]


def _line_from_json(data: list[Any]) -> LineItem:
    if len(data) == 3:
        return LineItem(*data)
    sku, quantity, price, product_id, name = data
    return LineItem(sku, quantity, price, uuid.UUID(product_id), name)
