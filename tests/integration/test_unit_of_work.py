"""The kit's unit of work on the session's PostgreSQL: all or nothing, and idempotent writes.

Each test records events of an aggregate type of its own, so the rows it
counts are its own (no relay routes these types).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from shop.order.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors
from services.kit.idempotency import IdempotencyStore, KeyScope, idempotency_keys
from services.kit.inbox import inbox
from services.kit.outbox import Event, outbox
from services.kit.outbox import row as outbox_row
from services.kit.uow import Claim, Stored, UnitOfWork, Work


class Boom(Exception):
    """What a failing step raises."""


@dataclass
class Scene:
    """One test's engine, aggregate type and caller."""

    engine: AsyncEngine
    keys: IdempotencyStore
    aggregate: str
    scope: KeyScope

    def event(self, aggregate_id: str = "a-1") -> Event:
        contract = events_pb2.OrderClosed(order_id=aggregate_id, tenant_id=self.scope.tenant)
        return Event(self.aggregate, aggregate_id, self.scope.tenant, "test.happened", contract)

    def claim(self, key: str = "key-1", request_hash: str = "h1", **scope: str) -> Claim:
        who = KeyScope(**{"tenant": self.scope.tenant, "user": self.scope.user, **scope})
        return Claim(who, key, "things.create", request_hash)

    async def events(self) -> list[str]:
        """The aggregate ids of this test's outbox rows, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(outbox.c.aggregate_id)
                .where(outbox.c.aggregate_type == self.aggregate)
                .order_by(outbox.c.seq)
            )
            return list(rows.scalars())

    async def keys_held(self) -> int:
        async with self.engine.connect() as conn:
            count = await conn.execute(
                sa.select(sa.func.count()).where(idempotency_keys.c.tenant_id == self.scope.tenant)
            )
            return int(count.scalar_one())

    async def inbox_records(self) -> int:
        async with self.engine.connect() as conn:
            count = await conn.execute(
                sa.select(sa.func.count()).where(inbox.c.consumer == self.aggregate)
            )
            return int(count.scalar_one())


@pytest.fixture
async def scene(engine: AsyncEngine, tenant: str) -> AsyncIterator[Scene]:
    aggregate = f"test-{uuid.uuid4().hex[:12]}"
    yield Scene(engine, IdempotencyStore(), aggregate, KeyScope(tenant, "u-1"))
    async with engine.begin() as conn:
        await conn.execute(sa.delete(outbox).where(outbox.c.aggregate_type == aggregate))
        await conn.execute(sa.delete(inbox).where(inbox.c.consumer == aggregate))


# A thing made by an effect: stored with its key as {"id": ...}.
STORED_ID = Stored[str](lambda made: {"id": made}, lambda stored: stored["id"])


def making(work: Work, scene: Scene, made: list[str]) -> Any:
    """An effect that records one event and returns a new id (also appended to `made`)."""

    async def effect() -> str:
        thing = f"thing-{len(made) + 1}"
        made.append(thing)
        await work.outbox.add(scene.event(thing))
        return thing

    return effect


async def test_everything_done_in_a_unit_of_work_commits_together(scene: Scene) -> None:
    made: list[str] = []
    async with UnitOfWork(scene.engine, scene.keys) as work:
        assert await work.inbox.first_time(scene.aggregate, "m-1")
        await work.idempotent(scene.claim(), making(work, scene, made), STORED_ID)
        await work.outbox.add(scene.event("a-2"))
    assert await scene.events() == ["thing-1", "a-2"]
    assert await scene.keys_held() == 1
    assert await scene.inbox_records() == 1


async def test_an_error_rolls_back_the_writes_the_outbox_the_inbox_and_the_claim(
    scene: Scene,
) -> None:
    made: list[str] = []

    async def failing_midway() -> None:
        async with UnitOfWork(scene.engine, scene.keys) as work:
            assert await work.inbox.first_time(scene.aggregate, "m-1")
            await work.idempotent(scene.claim(), making(work, scene, made), STORED_ID)
            await work.outbox.add(scene.event("a-2"))
            raise Boom

    with pytest.raises(Boom):
        await failing_midway()
    assert made == ["thing-1"]  # the effect ran, and left nothing behind
    assert await scene.events() == []
    assert await scene.keys_held() == 0
    assert await scene.inbox_records() == 0


async def test_the_same_key_and_request_replays_the_stored_response(scene: Scene) -> None:
    made: list[str] = []
    outcomes = []
    for _ in range(3):
        async with UnitOfWork(scene.engine, scene.keys) as work:
            outcomes.append(
                await work.idempotent(scene.claim(), making(work, scene, made), STORED_ID)
            )
    assert [(o.value, o.replayed) for o in outcomes] == [
        ("thing-1", False),
        ("thing-1", True),
        ("thing-1", True),
    ]
    assert made == ["thing-1"]
    assert await scene.events() == ["thing-1"]


async def test_a_key_reused_with_another_request_or_operation_is_refused(scene: Scene) -> None:
    made: list[str] = []
    async with UnitOfWork(scene.engine, scene.keys) as work:
        await work.idempotent(scene.claim(request_hash="h1"), making(work, scene, made), STORED_ID)
    other_operation = Claim(scene.scope, "key-1", "things.delete", "h1")
    for claim in (scene.claim(request_hash="h2"), other_operation):
        with pytest.raises(errors.IdempotencyKeyReused):
            async with UnitOfWork(scene.engine, scene.keys) as work:
                await work.idempotent(claim, making(work, scene, made), STORED_ID)
    assert made == ["thing-1"]


async def test_another_users_equal_key_is_another_write(scene: Scene) -> None:
    made: list[str] = []
    for user in ("u-1", "u-2"):
        async with UnitOfWork(scene.engine, scene.keys) as work:
            done = await work.idempotent(
                scene.claim(user=user), making(work, scene, made), STORED_ID
            )
            assert not done.replayed
    assert made == ["thing-1", "thing-2"]


async def test_a_failed_effect_releases_the_key_for_a_retry(scene: Scene) -> None:
    async def failing() -> str:
        raise Boom

    with pytest.raises(Boom):
        async with UnitOfWork(scene.engine, scene.keys) as work:
            await work.idempotent(scene.claim(), failing, STORED_ID)
    made: list[str] = []
    async with UnitOfWork(scene.engine, scene.keys) as work:
        done = await work.idempotent(scene.claim(), making(work, scene, made), STORED_ID)
    assert (done.value, done.replayed) == ("thing-1", False)


async def test_concurrent_requests_with_one_key_run_the_effect_once(scene: Scene) -> None:
    made: list[str] = []

    async def request() -> tuple[str, bool]:
        async with UnitOfWork(scene.engine, scene.keys) as work:
            effect = making(work, scene, made)

            async def slow() -> str:
                await asyncio.sleep(0.3)  # the others arrive while the key is held
                made_id: str = await effect()
                return made_id

            done = await work.idempotent(scene.claim(), slow, STORED_ID)
            return done.value, done.replayed

    results = await asyncio.gather(*[request() for _ in range(4)])
    assert sorted(results) == [("thing-1", False)] + [("thing-1", True)] * 3
    assert await scene.events() == ["thing-1"]


async def test_an_idempotent_write_needs_a_store(scene: Scene) -> None:
    async with UnitOfWork(scene.engine) as work:
        with pytest.raises(RuntimeError):
            await work.idempotent(scene.claim(), making(work, scene, []), STORED_ID)


async def test_an_effect_may_store_its_response_in_its_own_last_statement(scene: Scene) -> None:
    """`response_row` with the effect's rows: one statement, and a replay finds it."""

    async def request() -> tuple[str, bool]:
        async with UnitOfWork(scene.engine, scene.keys) as work:

            async def effect() -> str:
                thing = f"thing-at-{(await work.now()).isoformat()}"
                row = outbox_row(scene.event(thing))
                await db.write_together(work.conn, [row, work.response_row(thing)])
                return thing

            done = await work.idempotent(scene.claim(), effect, STORED_ID)
            return done.value, done.replayed

    first = await request()
    assert not first[1]
    assert await request() == (first[0], True)
    assert await scene.events() == [first[0]]
    async with scene.engine.connect() as conn:
        stored = await conn.execute(
            sa.select(idempotency_keys.c.response_json, idempotency_keys.c.created_at).where(
                scene.claim().scope.where()
            )
        )
        response, claimed_at = stored.one()
    # The stored response is the effect's; `now()` was the claim's time, no extra read.
    assert response == {"id": first[0]}
    assert first[0] == f"thing-at-{claimed_at.isoformat()}"


async def test_response_row_is_only_for_an_idempotent_effect(scene: Scene) -> None:
    async with UnitOfWork(scene.engine, scene.keys) as work:
        with pytest.raises(RuntimeError):
            work.response_row("x")


async def test_writes_of_one_shape_bind_each_call_s_own_values(scene: Scene) -> None:
    """The statement of a shape is built once and reused: every call's values land,
    an update touches only the rows its `where` names, and the notification is sent."""
    ids = [f"shape-{n}" for n in range(3)]
    channel = f"shape_{uuid.uuid4().hex[:12]}"
    heard: list[str] = []
    url = db.libpq_url(scene.engine.url.render_as_string(hide_password=False))
    listener = await asyncpg.connect(url)
    await listener.add_listener(channel, lambda *args: heard.append(args[-1]))
    async with UnitOfWork(scene.engine) as work:
        for aggregate_id in ids:
            await db.write_together(
                work.conn,
                [
                    outbox_row(scene.event(aggregate_id)),
                    outbox_row(scene.event(aggregate_id + "b")),
                ],
                notify=db.Notify(channel, aggregate_id),
            )
        updated = db.Write(
            outbox, {"event_type": "test.updated"}, where={"aggregate_id": ids[1] + "b"}
        )
        await db.write_together(work.conn, [updated])
    # (The CTEs of one statement run in no set order: compare as sets.)
    assert sorted(await scene.events()) == sorted(i + s for i in ids for s in ("", "b"))
    async with scene.engine.connect() as conn:
        types = await conn.execute(
            sa.select(outbox.c.aggregate_id, outbox.c.event_type).where(
                outbox.c.aggregate_type == scene.aggregate
            )
        )
        changed = {a for a, t in types if t == "test.updated"}
    assert changed == {ids[1] + "b"}
    for _ in range(50):
        if len(heard) == len(ids):
            break
        await asyncio.sleep(0.05)
    await listener.close()
    assert heard == ids
