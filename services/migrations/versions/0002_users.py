"""Users: the user service's accounts, unique by email and by username per tenant.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.CheckConstraint("role IN ('customer', 'admin')", name="ck_users_role"),
        sa.CheckConstraint("version >= 1", name="ck_users_version"),
        # The service stores emails and usernames lowercased, so these make
        # them unique case-insensitively; the service maps a violation to
        # "already registered" by these names.
        sa.UniqueConstraint("tenant_id", "email", name="uq_users_tenant_id_email"),
        sa.UniqueConstraint("tenant_id", "username", name="uq_users_tenant_id_username"),
    )
    # Keyset pagination: WHERE tenant_id = ? AND (created_at, id) > (?, ?)
    # ORDER BY created_at, id reads this index in order.
    op.create_index("ix_users_tenant_page", "users", ["tenant_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_table("users")
