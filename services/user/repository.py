"""Users in PostgreSQL (SQLAlchemy Core on asyncpg). Every query names the tenant."""

from __future__ import annotations

import uuid
from typing import NoReturn

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import errors
from services.kit.cursor import TimeIdPosition
from services.kit.db import metadata
from services.user.domain import AlreadyRegistered, NewUser, User, UserNotFound

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("username", sa.Text, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('customer', 'admin')", name="role"),
    sa.CheckConstraint("version >= 1", name="version"),
    sa.UniqueConstraint("tenant_id", "email"),
    sa.UniqueConstraint("tenant_id", "username"),
    sa.Index("ix_users_tenant_page", "tenant_id", "created_at", "id"),
)

# Which field a unique violation is about, by constraint name (see migration 0002).
_UNIQUE_FIELDS = {"uq_users_tenant_id_email": "email", "uq_users_tenant_id_username": "username"}


def _user(row: sa.Row[tuple[object, ...]]) -> User:
    m = row._mapping
    return User(
        id=m["id"],
        tenant_id=m["tenant_id"],
        email=m["email"],
        username=m["username"],
        role=m["role"],
        version=m["version"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        password_hash=m["password_hash"],
    )


def _taken(error: sa.exc.IntegrityError) -> NoReturn:
    """AlreadyRegistered for a unique violation on email or username; anything else re-raised."""
    text = str(error.orig)
    for constraint, field_name in _UNIQUE_FIELDS.items():
        if constraint in text:
            raise AlreadyRegistered(field_name) from None
    raise error


async def insert(
    conn: AsyncConnection, tenant: str, new: NewUser, password_hash: str, role: str
) -> User:
    """Insert a user at version 1 with database time; AlreadyRegistered on a taken name."""
    now = sa.func.now()
    try:
        row = (
            await conn.execute(
                sa.insert(users)
                .values(
                    id=uuid.uuid4(),
                    tenant_id=tenant,
                    email=new.email,
                    username=new.username,
                    password_hash=password_hash,
                    role=role,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
                .returning(*users.c)
            )
        ).one()
    except sa.exc.IntegrityError as error:
        _taken(error)
    return _user(row)


async def get(conn: AsyncConnection, tenant: str, user_id: uuid.UUID) -> User:
    """The tenant's user, or UserNotFound (also for another tenant's user)."""
    row = (
        await conn.execute(
            sa.select(users).where(users.c.tenant_id == tenant, users.c.id == user_id)
        )
    ).first()
    if row is None:
        raise UserNotFound()
    return _user(row)


async def find(
    conn: AsyncConnection, tenant: str, *, email: str | None = None, username: str | None = None
) -> User | None:
    """The tenant's user with this (stored-form) email, else this username, or None."""
    column, value = (users.c.email, email) if email is not None else (users.c.username, username)
    row = (
        await conn.execute(sa.select(users).where(users.c.tenant_id == tenant, column == value))
    ).first()
    return None if row is None else _user(row)


async def save(conn: AsyncConnection, before: User, after: User) -> User:
    """Write `after` if the row is still at `before.version` (the optimistic lock);
    errors.StaleVersion when another change landed between our read and this write."""
    try:
        row = (
            await conn.execute(
                sa.update(users)
                .where(
                    users.c.tenant_id == before.tenant_id,
                    users.c.id == before.id,
                    users.c.version == before.version,
                )
                .values(
                    email=after.email,
                    username=after.username,
                    role=after.role,
                    password_hash=after.password_hash,
                    version=users.c.version + 1,
                    updated_at=sa.func.now(),
                )
                .returning(*users.c)
            )
        ).first()
    except sa.exc.IntegrityError as error:
        _taken(error)
    if row is None:
        raise errors.StaleVersion()
    return _user(row)


async def replace_hash(conn: AsyncConnection, user: User, new_hash: str) -> None:
    """Store a stronger hash of the same password, unless the password changed meanwhile."""
    # Not a change a client can see, so neither version nor updated_at moves.
    await conn.execute(
        sa.update(users)
        .where(
            users.c.tenant_id == user.tenant_id,
            users.c.id == user.id,
            users.c.password_hash == user.password_hash,
        )
        .values(password_hash=new_hash)
    )


async def page(
    conn: AsyncConnection, tenant: str, limit: int, after: TimeIdPosition | None
) -> list[User]:
    """Up to `limit` users oldest first, strictly after the `after` position."""
    query = sa.select(users).where(users.c.tenant_id == tenant)
    if after is not None:
        query = query.where(sa.tuple_(users.c.created_at, users.c.id) > (after.ts, after.id))
    query = query.order_by(users.c.created_at, users.c.id).limit(limit)
    return [_user(r) for r in (await conn.execute(query)).all()]
