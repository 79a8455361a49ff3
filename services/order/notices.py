"""What the shop tells a customer when their order changes: one notice per status
worth telling, stored with the change (services.order.transitions) and delivered
by the notifier (services.order.notifier)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.order.domain import Order, OrderStatus

# A notification's delivery states (the `notifications.status` column).
PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass(frozen=True)
class Notice:
    kind: str
    subject: str
    body: str
    channel: str = "email"


@dataclass(frozen=True)
class Notification:
    """One stored message to a customer, as the list shows it and the notifier sends it."""

    id: uuid.UUID
    tenant_id: str
    user_id: str
    order_id: uuid.UUID | None
    kind: str
    channel: str
    subject: str
    body: str
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None

    @property
    def recipient(self) -> str:
        """Who the provider delivers to: the platform user, resolved to an address there."""
        return f"user:{self.user_id}"


def _short(order: Order) -> str:
    return str(order.id)[:8]


def notice_for(order: Order) -> Notice | None:
    """The notice for the status the order just reached; None when there is nothing to tell."""
    ref, total = _short(order), f"{(order.total_cents or 0) / 100:.2f}"
    match order.status:
        case OrderStatus.RESERVED | OrderStatus.PENDING:
            return Notice(
                "order.placed",
                f"Order {ref} received",
                f"We have your order {order.id} for {total}. We will tell you when it is paid.",
            )
        case OrderStatus.PAID:
            return Notice(
                "order.paid",
                f"Order {ref} paid",
                f"Your payment of {total} for {order.id} went through.",
            )
        case OrderStatus.FULFILLED:
            return Notice(
                "order.fulfilled",
                f"Order {ref} is on its way",
                f"Order {order.id} has been fulfilled.",
            )
        case OrderStatus.FAILED:
            why = (order.failure_reason or "unknown").replace("_", " ")
            return Notice(
                "order.failed",
                f"Order {ref} could not be completed",
                f"Order {order.id} failed: {why}.",
            )
        case OrderStatus.CANCELLED:
            return Notice(
                "order.cancelled", f"Order {ref} cancelled", f"Order {order.id} was cancelled."
            )
        case OrderStatus.REFUNDED:
            return Notice(
                "order.refunded",
                f"Order {ref} refunded",
                f"We refunded {total} for order {order.id}.",
            )
    return None
