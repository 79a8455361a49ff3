"""Orders belong to the user who placed them; idempotency keys to the user who sent them.

Revision ID: 0003
Revises: 0002

Existing rows cannot be attributed: nothing recorded who placed an order or
sent a key before this revision, and guessing would hand an order to the wrong
customer. So:
- existing orders get `user_id` NULL. NULL equals no caller's id, so those
  orders are visible to, and can be confirmed or closed by, the tenant's
  admins only; no customer gains or keeps access to them.
- existing idempotency keys get `user_id` '' (empty). The service never
  presents an empty user, so they replay for nobody and are purged when they
  expire (within IDEMPOTENCY_TTL_S, 1 h): a retry of a create sent before the
  upgrade makes a new order rather than replaying.

Downgrade keeps, per (tenant, key), only the oldest key row, so the old
primary key can be restored; it drops the owners.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("user_id", sa.Text, nullable=True))
    # A customer's list: WHERE tenant_id = ? AND user_id = ? AND (created_at, id)
    # < (?, ?) ORDER BY created_at DESC, id DESC reads this index in order, as
    # an admin's tenant-wide list reads ix_orders_tenant_page.
    op.create_index(
        "ix_orders_owner_page",
        "orders",
        ["tenant_id", "user_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )

    # The default fills the existing rows in the same statement, then goes:
    # new rows must always name their user.
    op.add_column(
        "idempotency_keys",
        sa.Column("user_id", sa.Text, nullable=False, server_default=""),
    )
    op.alter_column("idempotency_keys", "user_id", server_default=None)
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
    op.create_primary_key(
        "pk_idempotency_keys", "idempotency_keys", ["tenant_id", "user_id", "key"]
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM idempotency_keys newer USING idempotency_keys older"
        " WHERE newer.tenant_id = older.tenant_id AND newer.key = older.key"
        " AND (newer.created_at, newer.user_id) > (older.created_at, older.user_id)"
    )
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
    op.drop_column("idempotency_keys", "user_id")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["tenant_id", "key"])
    op.drop_index("ix_orders_owner_page", table_name="orders")
    op.drop_column("orders", "user_id")
