"""The unit of work: one connection, one transaction, and what belongs inside it.

    async with UnitOfWork(engine, idempotency) as work:
        done = await work.idempotent(claim, lambda: repository.insert(work.conn, ...), ORDER)
        await work.outbox.add(event)

Everything done through `work` (its connection, outbox rows, inbox records,
idempotency claims) commits together when the block ends and rolls back
together when it raises, so an event is never recorded for a change that did
not happen, and a claimed key never outlives a failed effect.

`Work.idempotent` is the idempotent-write skeleton every such use case
shares: claim the caller's key, and either replay the response stored with it
or run the effect and store its response in the same transaction. A
concurrent duplicate waits on the key's row (see `services.kit.idempotency`)
and then replays; an effect that raises rolls its claim back, so the client
may retry with the same key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit.audit import Audit
from services.kit.db import Write
from services.kit.idempotency import IdempotencyStore, KeyScope
from services.kit.inbox import Inbox
from services.kit.outbox import Outbox

R = TypeVar("R")


@dataclass(frozen=True)
class Claim:
    """An idempotent request: whose key, the key, the operation and the request's hash."""

    scope: KeyScope
    key: str
    operation: str
    request_hash: str


@dataclass(frozen=True)
class Stored(Generic[R]):
    """How an effect's result is stored with its key (`dump`) and read back to replay (`load`)."""

    dump: Callable[[R], dict[str, Any]]
    load: Callable[[dict[str, Any]], R]


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """An idempotent write's result; `replayed` when it was the stored one."""

    value: R
    replayed: bool


class Work:
    """An open unit of work: its connection, outbox, inbox and idempotent writes."""

    def __init__(self, conn: AsyncConnection, idempotency: IdempotencyStore | None) -> None:
        self.conn = conn
        self.outbox = Outbox(conn)
        self.inbox = Inbox(conn)
        self.audit = Audit(conn)
        self._idempotency = idempotency
        self._at: datetime | None = None
        self._response: Callable[[Any], Write] | None = None
        self._response_written = False

    async def now(self) -> datetime:
        """The transaction's time (`now()`, the same for every statement in it): the
        claim's, when a key was claimed, so reading it costs no round trip."""
        if self._at is None:
            self._at = (await self.conn.execute(sa.select(sa.func.now()))).scalar_one()
        return self._at

    def response_row(self, value: Any) -> Write:
        """The update storing `value` as the claimed key's response, for an effect that
        writes it in its own last statement (`db.write_together`) rather than in one more
        round trip after it. Only inside `idempotent`'s effect."""
        if self._response is None:
            raise RuntimeError("response_row is for the effect of Work.idempotent")
        self._response_written = True
        return self._response(value)

    async def idempotent(
        self, claim: Claim, effect: Callable[[], Awaitable[R]], stored: Stored[R]
    ) -> Outcome[R]:
        """Replay the response stored for the claim's key, or run `effect` and store its."""
        if self._idempotency is None:
            raise RuntimeError("this unit of work was opened without an idempotency store")
        begun = await self._idempotency.begin(
            self.conn, claim.scope, claim.key, claim.operation, claim.request_hash
        )
        if begun.replay is not None:
            return Outcome(stored.load(begun.replay), replayed=True)
        self._at = self._at or begun.at
        self._response_written = False
        store = self._idempotency.finish_row
        self._response = lambda value: store(claim.scope, claim.key, stored.dump(value))
        try:
            value = await effect()
        finally:
            self._response = None
        if not self._response_written:
            await self._idempotency.finish(self.conn, claim.scope, claim.key, stored.dump(value))
        return Outcome(value, replayed=False)


class UnitOfWork:
    """`async with UnitOfWork(engine, idempotency) as work`: a transaction on a connection of its own."""

    def __init__(self, engine: AsyncEngine, idempotency: IdempotencyStore | None = None) -> None:
        self._engine = engine
        self._idempotency = idempotency
        self._transaction: AbstractAsyncContextManager[AsyncConnection] | None = None

    async def __aenter__(self) -> Work:
        if self._transaction is not None:
            raise RuntimeError("a unit of work is entered once")
        self._transaction = self._engine.begin()
        return Work(await self._transaction.__aenter__(), self._idempotency)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._transaction is not None
        return await self._transaction.__aexit__(exc_type, exc, traceback)
