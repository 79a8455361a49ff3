"""Payments by order: an index for reading an order's charge attempts.

Revision ID: 0007
Revises: 0006

An order's read (its latest charge's status), the order list's payment statuses, an
order's attempts and the cascade from a deleted order all look payments up by
`order_id`; only the live charge had an index (the partial unique one), so each of
these scanned the whole table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_payments_order",
        "payments",
        ["order_id", sa.text("created_at DESC"), "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_payments_order", table_name="payments")
