"""The kit's engine on the session's PostgreSQL: idle connections are checked before
use, busy ones are not.

A database restart or failover leaves the pool holding dead connections; the one
the next transaction takes has sat idle, so it is pinged, found dead and replaced,
and the transaction succeeds. Connections handed back moments ago are reused
without the ping's round trip, which is what a busy service does all the time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db

IDLE_S = 0.2


@pytest.fixture
async def pool(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncEngine]:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", IDLE_S)
    engine = db.create_engine(postgres_url, pool_size=2)
    yield engine
    await engine.dispose()


def count_pings(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    dialect = engine.sync_engine.dialect
    ping = dialect.do_ping
    pings: list[int] = []

    def counted(connection: Any) -> bool:
        pings.append(1)
        return ping(connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


async def backend(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        return int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_reused_at_once_is_not_pinged(
    pool: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = count_pings(pool, monkeypatch)
    first = await backend(pool)
    for _ in range(20):
        assert await backend(pool) == first
    assert pings == []
    await asyncio.sleep(IDLE_S * 2)
    assert await backend(pool) == first
    assert len(pings) == 1  # idle: checked before use


async def test_after_the_database_drops_idle_connections_the_next_transaction_succeeds(
    pool: AsyncEngine, postgres_url: str
) -> None:
    before = await backend(pool)
    killer = db.create_engine(postgres_url, pool_size=1)
    try:
        async with killer.begin() as conn:
            killed = await conn.execute(
                sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": before}
            )
            assert killed.scalar_one() is True
    finally:
        await killer.dispose()
    await asyncio.sleep(IDLE_S * 2)
    after = await backend(pool)  # no error: the dead connection was replaced
    assert after != before


XID = sa.text("SELECT txid_current(), pg_backend_pid()")


async def test_reads_run_without_a_transaction_block_and_hand_back_a_transactional_connection(
    postgres_url: str,
) -> None:
    """`db.reads` sends no BEGIN: each statement is a transaction of its own (a new
    transaction id each), and the one pooled connection it used runs the next unit of
    work as one transaction again (one id for both statements, undone by a rollback)."""
    engine = db.create_engine(postgres_url, pool_size=1)
    try:
        async with db.reads(engine).connect() as conn:
            first, read_pid = (await conn.execute(XID)).one()
            second, _ = (await conn.execute(XID)).one()
            assert second != first
        assert db.reads(engine) is db.reads(engine)
        async with engine.begin() as conn:
            first, pid = (await conn.execute(XID)).one()
            second, _ = (await conn.execute(XID)).one()
            assert (second, pid) == (first, read_pid)
            await conn.execute(sa.text("CREATE TEMP TABLE undone (n int)"))
            await conn.rollback()
        async with engine.connect() as conn:
            first, pid = (await conn.execute(XID)).one()
            assert ((await conn.execute(XID)).one()[0], pid) == (first, read_pid)
            # The rollback took the table with it: that connection was in a transaction.
            missing = sa.text("SELECT to_regclass('pg_temp.undone') IS NULL")
            assert (await conn.execute(missing)).scalar_one()
    finally:
        await engine.dispose()


async def test_a_burst_keeps_its_connections_for_the_next_one(postgres_url: str) -> None:
    """A burst that needs every connection the pool allows (twice `pool_size`) opens
    them once: the next burst runs on the same backends, instead of the pool closing
    the connections beyond `pool_size` as they come back and opening new ones."""
    engine = db.create_engine(postgres_url, pool_size=2)
    in_flight = asyncio.Barrier(4)

    async def hold() -> int:
        async with engine.begin() as conn:
            pid = int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())
            await in_flight.wait()  # all four out at once
            return pid

    try:
        first = set(await asyncio.gather(*(hold() for _ in range(4))))
        assert len(first) == 4
        again = set(await asyncio.gather(*(hold() for _ in range(4))))
        assert again == first
        assert await backend(engine) in first  # light load: one of the same
    finally:
        await engine.dispose()
