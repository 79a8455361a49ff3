"""The kit's housekeeping on the session's PostgreSQL: what has served its purpose goes,
nothing else does.

Each test's rows carry a tenant, consumer or aggregate type of its own; a sweep may
also delete other tests' expired rows, which is what it is for.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.config import ConfigError
from services.kit.housekeeping import Housekeeping, HousekeepingConfig
from services.kit.idempotency import idempotency_keys
from services.kit.inbox import inbox
from services.kit.outbox import outbox

DAY = timedelta(days=1)


async def _keys(engine: AsyncEngine, tenant: str, ages: dict[str, timedelta]) -> None:
    """Idempotency keys of `tenant` whose expiry is `age` from now (negative: expired)."""
    async with engine.begin() as conn:
        for key, age in ages.items():
            await conn.execute(
                sa.insert(idempotency_keys).values(
                    tenant_id=tenant, user_id="u", key=key, operation="test", request_hash="h",
                    created_at=sa.func.now(), expires_at=sa.func.now() + age,
                )
            )  # fmt: skip


async def _left(engine: AsyncEngine, query: sa.Select[tuple[str]]) -> list[str]:
    async with engine.connect() as conn:
        return sorted((await conn.execute(query)).scalars())


async def test_a_sweep_deletes_expired_keys_old_inbox_records_and_old_published_events(
    engine: AsyncEngine, tenant: str
) -> None:
    await _keys(engine, tenant, {"expired": -DAY, "live": DAY})
    consumer, aggregate = f"c-{tenant}", f"a-{tenant}"
    async with engine.begin() as conn:
        for message_id, age in (("old", 31 * DAY), ("recent", DAY)):
            await conn.execute(
                sa.insert(inbox).values(
                    consumer=consumer, message_id=message_id,
                    processed_at=sa.func.now() - age,
                )
            )  # fmt: skip
        for name, published_ago in (
            ("old-published", 8 * DAY),
            ("recent-published", DAY),
            ("unpublished", None),
        ):
            await conn.execute(
                sa.insert(outbox).values(
                    id=uuid.uuid4(), aggregate_type=aggregate, aggregate_id=name,
                    event_type="test.swept", tenant_id=tenant, payload={},
                    traceparent="", created_at=sa.func.now() - 30 * DAY,
                    published_at=None if published_ago is None else sa.func.now() - published_ago,
                )
            )  # fmt: skip

    swept = await Housekeeping(engine).sweep_once()

    assert swept.idempotency_keys >= 1
    assert swept.inbox >= 1
    assert swept.outbox >= 1
    keys = sa.select(idempotency_keys.c.key).where(idempotency_keys.c.tenant_id == tenant)
    assert await _left(engine, keys) == ["live"]
    records = sa.select(inbox.c.message_id).where(inbox.c.consumer == consumer)
    assert await _left(engine, records) == ["recent"]
    # A month-old row that was never published stays: the relay still owes it.
    events = sa.select(outbox.c.aggregate_id).where(outbox.c.aggregate_type == aggregate)
    assert await _left(engine, events) == ["recent-published", "unpublished"]
    async with engine.begin() as conn:
        await conn.execute(sa.delete(outbox).where(outbox.c.aggregate_type == aggregate))
        await conn.execute(sa.delete(inbox).where(inbox.c.consumer == consumer))
        await conn.execute(
            sa.delete(idempotency_keys).where(idempotency_keys.c.tenant_id == tenant)
        )


async def test_one_sweep_deletes_at_most_a_batch_per_table(
    engine: AsyncEngine, tenant: str
) -> None:
    await _keys(engine, tenant, {f"k{i}": -DAY for i in range(5)})
    housekeeping = Housekeeping(engine, HousekeepingConfig(batch=2))
    keys = sa.select(idempotency_keys.c.key).where(idempotency_keys.c.tenant_id == tenant)

    assert (await housekeeping.sweep_once()).idempotency_keys == 2
    assert len(await _left(engine, keys)) <= 3
    while (await housekeeping.sweep_once()).idempotency_keys:
        pass
    assert await _left(engine, keys) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"interval_s": 0},
        {"batch": 0},
        {"inbox_retention": timedelta(0)},
        {"outbox_retention": -DAY},
    ],
)
def test_retentions_and_batches_must_be_positive(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        HousekeepingConfig(**bad)
