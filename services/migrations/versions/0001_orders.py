"""Orders, items, idempotency keys and the outbox (seed 001 schema).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("total_cents", sa.Integer, nullable=True),
        sa.Column("customer_ref", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.CheckConstraint("status IN ('draft', 'confirmed', 'closed')", name="ck_orders_status"),
        sa.CheckConstraint("version >= 1", name="ck_orders_version"),
        sa.CheckConstraint("total_cents IS NULL OR total_cents >= 0", name="ck_orders_total_cents"),
        sa.CheckConstraint(
            "status = 'draft' OR total_cents IS NOT NULL", name="ck_orders_confirmed_has_total"
        ),
    )
    # Keyset pagination: WHERE tenant_id = ? AND (created_at, id) < (?, ?)
    # ORDER BY created_at DESC, id DESC reads this index in order.
    op.create_index(
        "ix_orders_tenant_page",
        "orders",
        ["tenant_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_table(
        "order_items",
        sa.Column("order_id", UUID(as_uuid=True), nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("sku", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_cents", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("order_id", "line_no", name="pk_order_items"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_order_items_order_id_orders", ondelete="CASCADE"
        ),
        sa.CheckConstraint("quantity > 0", name="ck_order_items_quantity"),
        sa.CheckConstraint("unit_price_cents >= 0", name="ck_order_items_unit_price_cents"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("response_json", JSONB, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        # The primary key is the seed's unique (tenant_id, key).
        sa.PrimaryKeyConstraint("tenant_id", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    op.create_table(
        "outbox",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("order_id", UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_order_id", "outbox", ["order_id"])
    # The relay's scan for unpublished events stays small however large the table grows.
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["created_at"],
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("idempotency_keys")
    op.drop_table("order_items")
    op.drop_table("orders")
