"""Idempotency keys in PostgreSQL, claimed inside the caller's transaction.

A key belongs to its caller: the row is (tenant, user, key), so two users of
one tenant who happen to pick the same key get two effects, and neither can
replay (and so read) the other's stored response. `begin` inserts the row in
the same transaction as the effect, so two concurrent requests with one key
serialise on the unique index: the second waits for the first to commit, then
replays its stored response. An expired key (older than the TTL) is taken over
as new. A key reused with a different operation or body is
IdempotencyKeyReused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import errors, metrics
from services.kit.db import Write, metadata, write_together

MAX_KEY_LENGTH = 255

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("operation", sa.Text, nullable=False),
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("response_json", JSONB, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "user_id", "key"),
    sa.Index(None, "expires_at"),
)


@dataclass(frozen=True)
class KeyScope:
    """Whose keys these are: one user (the verified caller) of one tenant."""

    tenant: str
    user: str

    def __post_init__(self) -> None:
        # Fail closed: without a user every anonymous caller would share one scope.
        if not self.tenant or not self.user:
            raise errors.Unauthenticated("an idempotent write needs a verified user and tenant")

    def upstream_key(self, key: str) -> str:
        """The key to send an upstream that keeps one key space per tenant (the ERP):
        the caller's key bound to this user, so two users' equal keys never meet
        there, while a retry by the same user sends the same key again."""
        digest = hashlib.sha256(f"{self.user}\0{key}".encode()).hexdigest()[:32]
        return f"u-{digest}"

    def where(self) -> sa.ColumnElement[bool]:
        """The rows of this scope."""
        return sa.and_(
            idempotency_keys.c.tenant_id == self.tenant, idempotency_keys.c.user_id == self.user
        )


def fingerprint(operation: str, body: bytes) -> str:
    """The hash that tells 'same request' from 'different request' under one key."""
    return hashlib.sha256(operation.encode() + b"\0" + body).hexdigest()


def validate_key(key: str) -> str:
    """Keys are 1-255 visible ASCII characters."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise errors.InvalidArgument.field(
            "Idempotency-Key", f"must be 1-{MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def _claim_statement() -> sa.Insert:
    """Insert the key, or take over an expired one; returns a row only when claimed."""
    now = sa.func.now()
    values = insert(idempotency_keys).values(
        tenant_id=sa.bindparam("tenant_id"),
        user_id=sa.bindparam("user_id"),
        key=sa.bindparam("key"),
        operation=sa.bindparam("operation"),
        request_hash=sa.bindparam("request_hash"),
        created_at=now,
        expires_at=now + sa.bindparam("ttl", type_=sa.Interval),
    )
    return values.on_conflict_do_update(
        index_elements=["tenant_id", "user_id", "key"],
        set_={
            "operation": values.excluded.operation,
            "request_hash": values.excluded.request_hash,
            "response_json": None,
            "created_at": values.excluded.created_at,
            "expires_at": values.excluded.expires_at,
        },
        where=idempotency_keys.c.expires_at <= now,
    ).returning(idempotency_keys.c.created_at)


# Built once: a claim binds its values, with no statement construction per call.
_CLAIM = _claim_statement()


@dataclass(frozen=True)
class Begun:
    """What claiming a key found: a response to replay, or the key now claimed at `at`
    (the transaction's time, `now()`, which every row the effect writes shares)."""

    replay: dict[str, Any] | None
    at: datetime | None = None


class IdempotencyStore:
    """Claims keys and stores responses; replays live keys for a TTL."""

    def __init__(self, ttl: timedelta = timedelta(hours=1)) -> None:
        self.ttl = ttl

    async def begin(
        self, conn: AsyncConnection, scope: KeyScope, key: str, operation: str, request_hash: str
    ) -> Begun:
        """Claim the key (go ahead, at the transaction's time) or find the stored
        response to replay."""
        claimed = (
            await conn.execute(
                _CLAIM,
                {
                    "tenant_id": scope.tenant,
                    "user_id": scope.user,
                    "key": validate_key(key),
                    "operation": operation,
                    "request_hash": request_hash,
                    "ttl": self.ttl,
                },
            )
        ).first()
        if claimed is not None:
            return Begun(None, claimed.created_at)
        row = (
            await conn.execute(
                sa.select(
                    idempotency_keys.c.operation,
                    idempotency_keys.c.request_hash,
                    idempotency_keys.c.response_json,
                ).where(scope.where(), idempotency_keys.c.key == key)
            )
        ).one()
        if row.operation != operation or row.request_hash != request_hash:
            raise errors.IdempotencyKeyReused(
                "Idempotency-Key was already used with a different request"
            )
        response: dict[str, Any] | None = row.response_json
        if response is not None:
            metrics.IDEMPOTENT_REPLAYS.labels(operation).inc()
        return Begun(response)

    @staticmethod
    def finish_row(scope: KeyScope, key: str, response: dict[str, Any]) -> Write:
        """The update that stores the response of a claimed key (`finish` runs it; an
        effect that writes in one statement runs it with its rows, `db.write_together`)."""
        return Write(
            idempotency_keys,
            {"response_json": response},
            where={"tenant_id": scope.tenant, "user_id": scope.user, "key": key},
        )

    async def finish(
        self, conn: AsyncConnection, scope: KeyScope, key: str, response: dict[str, Any]
    ) -> None:
        """Store the response of a claimed key, in the same transaction as the effect."""
        await write_together(conn, [self.finish_row(scope, key, response)])
