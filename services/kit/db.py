"""PostgreSQL access: one MetaData for the platform's tables, async engines on asyncpg.

Every engine made here is counted in `shop_db_pool_connections` (in use and
idle, summed over the process's engines) on each metrics scrape, and, while the
process exports spans, traces each statement as a CLIENT span (OpenTelemetry's
SQLAlchemy instrumentation: the SQL with its placeholders, never the values).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.kit import metrics, tracing

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def async_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as libpq and docker use) and pick asyncpg."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    """The plain `postgresql://` form of a platform URL, for asyncpg itself (the change
    hub's LISTEN connection takes no SQLAlchemy driver name)."""
    for prefix in ("postgresql+asyncpg://", "postgres+asyncpg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


# A pooled connection idle longer than this is pinged before use (`_ping_when_idle`).
PING_AFTER_IDLE_S = 1.0


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine with a bounded pool that checks idle connections before use.

    The platform's only engine factory. The pool holds up to `pool_size` connections
    for steady work and as many again for bursts, and keeps every one it opens: an
    overflow connection that the pool closed on its return (SQLAlchemy's default) made
    each burst open new ones, each a PostgreSQL backend started, a SCRAM exchange and
    asyncpg's type introspection (about 85 per 1,000 placed orders in the inventory
    service). Last in, first out: light load keeps reusing the connection it just
    returned, so the spare ones sit idle rather than each waiting past the idle ping.
    `hide_parameters` keeps bound values out of every SQLAlchemy error text, so a
    traceback in a log never carries a password hash, an email or an order's data.
    """
    engine = create_async_engine(
        async_url(url),
        pool_size=2 * pool_size,
        max_overflow=0,
        pool_use_lifo=True,
        hide_parameters=True,
    )
    _ping_when_idle(engine)
    _engines.add(engine)
    if tracing.exporting():
        _trace(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection before use only when it sat idle longer than
    PING_AFTER_IDLE_S (SQLAlchemy's custom pessimistic disconnect handling).

    After a database restart or failover the pool's idle connections are dead:
    the ping finds one so, and the pool replaces it (and, the dialect seeing a
    disconnect, every connection older) before the transaction starts, so the
    next request succeeds. A connection handed back moments ago is used at once:
    under load no transaction pays a round trip for the check (`pool_pre_ping`
    pings on every checkout). One that died within the second fails its statement,
    and the disconnect invalidates the pool the same way."""
    sync = engine.sync_engine

    @event.listens_for(sync, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync, "checkout")
    def _taken(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= PING_AFTER_IDLE_S:
            return
        try:
            sync.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (up to 3 tries;
            # a database that is really down fails the fresh connect with its own error).
            raise sa.exc.DisconnectionError("a pooled connection was dead") from exc


def _trace(engine: AsyncEngine) -> None:
    """A span per statement of `engine`, child of the span that runs it."""
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
    from opentelemetry.instrumentation.sqlalchemy import __name__ as scope
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__

    # The instrumentor patches create_engine process-wide and instruments one engine
    # at most; its engine tracer is what it attaches to each engine.
    usage = otel_metrics.get_meter(scope, __version__).create_up_down_counter(
        "db.client.connections.usage", unit="connections"
    )
    EngineTracer(trace.get_tracer(scope, __version__), engine.sync_engine, usage)  # type: ignore[no-untyped-call]


_engines: weakref.WeakSet[AsyncEngine] = weakref.WeakSet()
_readers: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


def reads(engine: AsyncEngine) -> AsyncEngine:
    """`engine` for reads outside a unit of work: `reads(engine).connect()` runs each
    statement in autocommit, without the BEGIN and ROLLBACK round trips a plain
    `connect()` wraps around it (about 170 us of this process's CPU and 0.3 ms per
    read: bench/db_reads.py).

    It reads what a transaction would: the platform runs PostgreSQL's READ COMMITTED,
    where every statement of a transaction takes a snapshot of its own. Writes, row
    locks (FOR UPDATE) and reads that need one snapshot (REPEATABLE READ) belong in
    `engine.begin()` or a unit of work. The connections are the engine's own pool's; the
    pool sets a connection back to its default isolation when it is returned."""
    reader = _readers.get(engine)
    if reader is None:
        reader = _readers[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return reader


def is_one_of(column: sa.ColumnElement[Any], *values: str) -> sa.ColumnElement[bool]:
    """`column = value` or `column IN (values)`, the values written into the statement's
    text instead of sent as parameters: how a query names a partial index's predicate
    (`WHERE status = 'pending'`).

    asyncpg prepares each statement, and after five executions PostgreSQL may plan it
    once for any parameters (a generic plan), which it then keeps for the connection.
    A generic plan cannot use a partial index whose predicate a parameter decides, so a
    queue's poll with `status = $1` would read the whole table on every poll, for as
    long as the connection lives (tests/integration/test_query_plans.py)."""
    if not values:
        raise ValueError("is_one_of needs a value")
    if len(values) == 1:
        return column == sa.bindparam(None, values[0], type_=column.type, literal_execute=True)
    listed = sa.bindparam(
        None, list(values), type_=column.type, expanding=True, literal_execute=True
    )
    return column.in_(listed)


@dataclass(frozen=True)
class Write:
    """One row a change writes beside it: an insert of `values` into `table`, or, with
    `where`, an update setting `values` on the rows whose columns equal `where`'s.

    Plain values only, never SQL expressions: `write_together` builds the statement
    of each shape (tables, columns, order) once and binds the values, so a write
    costs no statement construction, cache-key walk or compilation per call."""

    table: sa.Table
    values: Mapping[str, Any]
    where: Mapping[str, Any] | None = None

    def _shape(self) -> tuple[object, ...]:
        return (
            self.table.name,
            tuple(self.values),
            None if self.where is None else tuple(self.where),
        )


@dataclass(frozen=True)
class Notify:
    """A `pg_notify(channel, payload)` sent when the transaction commits."""

    channel: str
    payload: str


_Shape = tuple[tuple[object, ...], bool]
_together: dict[_Shape, sa.Select[Any]] = {}
_MAX_SHAPES = 256


def _param(n: int, part: str, column: str) -> str:
    return f"w{n}_{part}_{column}"


def _write_ctes(writes: Sequence[Write]) -> list[Any]:
    ctes = []
    for n, write in enumerate(writes):
        table = write.table
        bound = {k: sa.bindparam(_param(n, "v", k), type_=table.c[k].type) for k in write.values}
        if write.where is None:
            statement: sa.Insert | sa.Update = sa.insert(table).values(bound)
        else:
            conditions = (
                table.c[k] == sa.bindparam(_param(n, "w", k), type_=table.c[k].type)
                for k in write.where
            )
            statement = sa.update(table).where(*conditions).values(bound)
        ctes.append(statement.cte(f"write_{n}"))
    return ctes


def _write_params(writes: Sequence[Write]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for n, write in enumerate(writes):
        params.update((_param(n, "v", k), v) for k, v in write.values.items())
        if write.where is not None:
            params.update((_param(n, "w", k), v) for k, v in write.where.items())
    return params


def _together_statement(writes: Sequence[Write], notify: bool) -> sa.Select[Any]:
    final = (
        sa.func.pg_notify(sa.bindparam("notify_channel"), sa.bindparam("notify_payload"))
        if notify
        else sa.literal(1)
    )
    return sa.select(final).add_cte(*_write_ctes(writes))


async def write_together(
    conn: AsyncConnection, writes: Sequence[Write], notify: Notify | None = None
) -> None:
    """Run several writes (and a `pg_notify`) as ONE statement: each is a data-modifying
    CTE, which PostgreSQL runs exactly once and to completion whether or not the query
    reads it. One round trip instead of one per row, for the rows a change writes
    beside itself (history, audit, outbox, ...); each shape's statement is built once."""
    shape: _Shape = (tuple(w._shape() for w in writes), notify is not None)
    statement = _together.get(shape)
    if statement is None:
        statement = _together_statement(writes, notify is not None)
        if len(_together) < _MAX_SHAPES:
            _together[shape] = statement
    params = _write_params(writes)
    if notify is not None:
        params["notify_channel"], params["notify_payload"] = notify.channel, notify.payload
    await conn.execute(statement, params)


_changes: dict[tuple[object, ...], sa.Select[Any]] = {}


async def change_together(
    conn: AsyncConnection,
    change: sa.Insert | sa.Update,
    params: Mapping[str, Any],
    writes: Sequence[Write],
) -> Sequence[sa.Row[Any]]:
    """`change` (an INSERT or UPDATE with RETURNING, built once by the caller, its
    values bound by `params`) and the rows written beside it as ONE statement, as in
    `write_together`; the rows `change` returned. The combined statement is built once
    per change and shape of rows."""
    shape = (change, *(w._shape() for w in writes))
    statement = _changes.get(shape)
    if statement is None:
        changed = change.cte("changed")
        statement = sa.select(changed).add_cte(*_write_ctes(writes))
        if len(_changes) < _MAX_SHAPES:
            _changes[shape] = statement
    result = await conn.execute(statement, {**params, **_write_params(writes)})
    rows: Sequence[sa.Row[Any]] = result.all()
    return rows


async def _sample_pools() -> None:
    in_use = idle = 0
    for engine in list(_engines):
        pool = engine.pool
        in_use += int(getattr(pool, "checkedout", lambda: 0)())
        idle += int(getattr(pool, "checkedin", lambda: 0)())
    metrics.DB_POOL.labels("in_use").set(in_use)
    metrics.DB_POOL.labels("idle").set(idle)


metrics.on_scrape(_sample_pools)
