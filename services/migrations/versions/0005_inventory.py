"""The inventory service's stock ledger: stock per product, reservations and their lines.

Revision ID: 0005
Revises: 0004

New tables only; no existing row changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stock",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("product_id", UUID(as_uuid=True), nullable=False),
        sa.Column("available", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False),
        sa.Column("low_stock_threshold", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "product_id", name="pk_stock"),
        sa.CheckConstraint("available >= 0 AND reserved >= 0", name="ck_stock_non_negative"),
        sa.CheckConstraint("low_stock_threshold >= 0", name="ck_stock_threshold"),
        sa.CheckConstraint("version >= 1", name="ck_stock_version"),
    )
    op.create_table(
        "reservations",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_reservations"),
        sa.CheckConstraint(
            "status IN ('reserved', 'released', 'committed')", name="ck_reservations_status"
        ),
    )
    # The reaper: WHERE status = 'reserved' AND expires_at < now() ORDER BY expires_at.
    op.create_index(
        "ix_reservations_live_expiry",
        "reservations",
        ["expires_at"],
        postgresql_where=sa.text("status = 'reserved'"),
    )
    op.create_table(
        "reservation_lines",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("reservation_id", UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", UUID(as_uuid=True), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "reservation_id", "product_id", name="pk_reservation_lines"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "reservation_id"],
            ["reservations.tenant_id", "reservations.id"],
            name="fk_reservation_lines_tenant_id_reservations",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("quantity > 0", name="ck_reservation_lines_quantity"),
    )


def downgrade() -> None:
    op.drop_table("reservation_lines")
    op.drop_index("ix_reservations_live_expiry", table_name="reservations")
    op.drop_table("reservations")
    op.drop_table("stock")
