"""The order service's tables: orders and their lines, status history, payments,
notifications and report export jobs (SQLAlchemy Core, on the kit's metadata).

One module so that the order service, the pipeline, the notifier and the export
worker share one definition of each table; migration 0006 builds what is new here.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from services.kit.db import metadata

# Every status an order can have: seed 001's drafts, then placed orders.
DRAFT_STATUSES = ("draft", "confirmed", "closed")
PLACED_STATUSES = ("pending", "reserved", "paid", "fulfilled", "cancelled", "failed", "refunded")
ORDER_STATUSES = DRAFT_STATUSES + PLACED_STATUSES
PAYMENT_STATUSES = ("pending", "unknown", "captured", "declined", "failed", "refunded")
# At most one of these per order (a partial unique index): a charge that may
# still take, or has.
LIVE_PAYMENT_STATUSES = ("pending", "unknown", "captured")
NOTIFICATION_STATUSES = ("pending", "sent", "failed")
EXPORT_STATUSES = ("queued", "running", "done", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    # The token's `sub` of whoever placed it; NULL on rows older than owners
    # (migration 0003), which match no customer and stay admin-only.
    sa.Column("user_id", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("total_cents", sa.Integer, nullable=True),
    sa.Column("customer_ref", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    # Placed orders (migration 0006): why one failed, and a cancel waiting for
    # a charge in flight to settle.
    sa.Column("failure_reason", sa.Text, nullable=True),
    sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint(_in("status", ORDER_STATUSES), name="status"),
    sa.CheckConstraint("version >= 1", name="version"),
    sa.CheckConstraint("total_cents IS NULL OR total_cents >= 0", name="total_cents"),
    sa.CheckConstraint("status = 'draft' OR total_cents IS NOT NULL", name="confirmed_has_total"),
    # Keyset pages: the tenant's (admins) and one owner's (customers).
    sa.Index("ix_orders_tenant_page", "tenant_id", sa.text("created_at DESC"), sa.text("id DESC")),
    sa.Index(
        "ix_orders_owner_page",
        "tenant_id",
        "user_id",
        sa.text("created_at DESC"),
        sa.text("id DESC"),
    ),
    # The admin's list filtered by status.
    sa.Index(
        "ix_orders_status_page",
        "tenant_id",
        "status",
        sa.text("created_at DESC"),
        sa.text("id DESC"),
    ),
)

order_items = sa.Table(
    "order_items",
    metadata,
    sa.Column(
        "order_id",
        UUID(as_uuid=True),
        sa.ForeignKey("orders.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("line_no", sa.Integer, nullable=False),
    sa.Column("sku", sa.Text, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price_cents", sa.Integer, nullable=False),
    # Placed orders: the catalogue product and its name when placed.
    sa.Column("product_id", UUID(as_uuid=True), nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.PrimaryKeyConstraint("order_id", "line_no"),
    sa.CheckConstraint("quantity > 0", name="quantity"),
    sa.CheckConstraint("unit_price_cents >= 0", name="unit_price_cents"),
)

# Every status an order has had, in order: GET /v1/orders/{id}/status.
order_status_changes = sa.Table(
    "order_status_changes",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column(
        "order_id",
        UUID(as_uuid=True),
        sa.ForeignKey("orders.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("from_status", sa.Text, nullable=True),
    sa.Column("to_status", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_order_status_changes_order", "order_id", "id"),
)

# One row per charge attempt, written before the provider is called: its id is
# the provider's idempotency key, so asking again can never charge twice.
payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column(
        "order_id",
        UUID(as_uuid=True),
        sa.ForeignKey("orders.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("provider_ref", sa.Text, nullable=True),  # the provider's charge id
    sa.Column("decline_reason", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # provider calls
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint(_in("status", PAYMENT_STATUSES), name="status"),
    sa.CheckConstraint("amount_cents >= 0", name="amount"),
    sa.Index(
        "uq_payments_live_per_order",
        "order_id",
        unique=True,
        postgresql_where=sa.text(_in("status", LIVE_PAYMENT_STATUSES)),
    ),
    # An order's attempts, newest first (its read shows the latest one's status).
    sa.Index("ix_payments_order", "order_id", sa.text("created_at DESC"), "id"),
    # The reconciler's work: payments whose outcome is not known.
    sa.Index(
        "ix_payments_unsettled",
        "updated_at",
        postgresql_where=sa.text("status IN ('pending', 'unknown')"),
    ),
)

# Messages to customers, stored with the change they report and delivered by the
# notifier (SKIP LOCKED claims: each sent once, however many notifiers run).
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("order_id", UUID(as_uuid=True), nullable=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column(
        "next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint(_in("status", NOTIFICATION_STATUSES), name="status"),
    sa.CheckConstraint("channel IN ('email', 'sms')", name="channel"),
    sa.Index(
        "ix_notifications_due",
        "next_attempt_at",
        postgresql_where=sa.text("status = 'pending'"),
    ),
    sa.Index(
        "ix_notifications_user_page",
        "tenant_id",
        "user_id",
        sa.text("created_at DESC"),
        sa.text("id DESC"),
    ),
)

# Background CSV exports of a date range; `position` is the keyset checkpoint a
# restarted job resumes from, and the CSV is kept in chunks as it is written.
report_exports = sa.Table(
    "report_exports",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("from_day", sa.Date, nullable=False),
    sa.Column("to_day", sa.Date, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("rows_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_total", sa.BigInteger, nullable=True),
    sa.Column("position", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint(_in("status", EXPORT_STATUSES), name="status"),
    sa.CheckConstraint("to_day >= from_day", name="range"),
    sa.Index("ix_report_exports_tenant", "tenant_id", sa.text("created_at DESC")),
)

report_export_chunks = sa.Table(
    "report_export_chunks",
    metadata,
    sa.Column(
        "export_id",
        UUID(as_uuid=True),
        sa.ForeignKey("report_exports.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("export_id", "seq"),
)
