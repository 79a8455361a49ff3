"""Session fixtures: each server on its own, and the whole platform on top of them.

`postgres_url` (migrated), `redis_url`, `mongo_url` and `routing_stub_url` each
start one server or stub with the launcher's own code (`infra.start_*`,
`provision.migrate`, `stubs.start_stub`) in this session's run directory, on
free ports, when a test first needs it; a `DATABASE_URL`, `REDIS_URL` or
`MONGO_URL` in the environment is used instead, as with `up`. So an
integration test starts only the servers it uses, and no Envoy.

`platform` starts the rest with the same `Platform` class that `./shop up`
uses (the services, the ERP and Warehouse stubs, Envoy), handing it those
URLs, so a whole run still starts each server once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
import redis
from pymongo import MongoClient
from pymongo.database import Database
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.launcher import PYTHONPATH, ROOT, infra, procs, stubs
from services.launcher.edge_limits import EdgeLimits, Quota
from services.launcher.platform import LauncherConfig, Platform, State, _secrets
from services.launcher.provision import migrate, seed_shipments
from tests import identity, webhooks
from tests.upstream_admin import StubAdmin


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `late` run after every other (they read what the session left)."""
    items.sort(key=lambda item: item.get_closest_marker("late") is not None)


def _server_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": PYTHONPATH, "LOG_LEVEL": "INFO"}


@pytest.fixture(scope="session")
def session_run_dir() -> Iterator[Path]:
    """This session's run directory (logs, data, the dev secrets), removed at the end."""
    run_dir = procs.private_dir(ROOT / ".run" / f"test-{os.getpid()}")
    yield run_dir
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def dev_secrets(session_run_dir: Path) -> dict[str, str]:
    """The run directory's generated passwords, the ones the launcher's `up` would use."""
    return _secrets(session_run_dir)


@pytest.fixture(scope="session")
def postgres_url(session_run_dir: Path, dev_secrets: dict[str, str]) -> Iterator[str]:
    """A PostgreSQL with the schema at the newest migration: `DATABASE_URL`, or one of ours."""
    proc, url = None, os.environ.get("DATABASE_URL") or None
    if url is None:
        proc, url = infra.start_postgres(
            session_run_dir, procs.free_port(), dev_secrets["postgres_password"], _server_env()
        )
    try:
        migrate({**_server_env(), "DATABASE_URL": url})
        yield url
    finally:
        if proc is not None:
            procs.stop(proc)
        shutil.rmtree(infra.pg_data_dir(session_run_dir), ignore_errors=True)


def _server(configured: str | None, start: Callable[[], tuple[procs.Proc, str]]) -> Iterator[str]:
    """The configured server's URL, or one started for the session and stopped after it."""
    if configured:
        yield configured
        return
    proc, url = start()
    try:
        yield url
    finally:
        procs.stop(proc)


@pytest.fixture(scope="session")
def redis_url(session_run_dir: Path, dev_secrets: dict[str, str]) -> Iterator[str]:
    """A Redis with a password: `REDIS_URL`, or one of ours."""
    yield from _server(
        os.environ.get("REDIS_URL"),
        lambda: infra.start_redis(
            session_run_dir, procs.free_port(), dev_secrets["redis_password"], _server_env()
        ),
    )


@pytest.fixture(scope="session")
def mongo_url(session_run_dir: Path) -> Iterator[str]:
    """A MongoDB-wire server: `MONGO_URL`, or one of ours."""
    yield from _server(
        os.environ.get("MONGO_URL"),
        lambda: infra.start_mongo(session_run_dir, procs.free_port(), _server_env()),
    )


@pytest.fixture(scope="session")
def routing_stub_url(session_run_dir: Path) -> Iterator[str]:
    """The Routing stub, as the platform runs it (the event workers call it)."""
    yield from _server(
        None,
        lambda: stubs.start_stub("routing", session_run_dir, procs.free_port(), _server_env()),
    )


async def _own_database(url: str, name: str) -> str:
    """A database `name` on the server of `url` (created when absent); its URL."""
    parts = urllib.parse.urlsplit(url)
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def _own_redis_db(url: str, db: int) -> str:
    """`url` with Redis database `db` instead of its own."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


def own_servers(
    postgres_url: str,
    redis_url: str,
    mongo_url: str,
    routing_stub_url: str,
    *,
    name: str,
    redis_db: int,
) -> dict[str, str]:
    """The environment of a platform on the session's servers, with a database `name` and
    Redis database `redis_db` of its own."""
    return {
        **os.environ,
        "DATABASE_URL": asyncio.run(_own_database(postgres_url, name)),
        "REDIS_URL": _own_redis_db(redis_url, redis_db),
        "MONGO_URL": mongo_url,
        "ROUTING_URL": routing_stub_url,
    }


@contextmanager
def running_platform(config: LauncherConfig) -> Iterator[State]:
    """The platform of `config`, up until the block ends."""
    launched = Platform(config)
    try:
        yield launched.up()
    finally:
        launched.down()


@pytest.fixture(scope="session")
def platform(
    session_run_dir: Path,
    postgres_url: str,
    redis_url: str,
    mongo_url: str,
    routing_stub_url: str,
) -> Iterator[State]:
    run_dir = session_run_dir
    # Every process on a free port; the session's servers (and any the environment
    # names by URL) are used instead of starting second copies, but with a database
    # and a Redis database of the platform's own: its workers (the pipeline, the
    # notifier, the export worker, the relay) must not take the integration tests'
    # messages and rows, nor theirs the platform's.
    config = LauncherConfig.on_free_ports(
        run_dir,
        own_servers(
            postgres_url, redis_url, mongo_url, routing_stub_url, name="shop_platform", redis_db=1
        ),
        log_level="INFO",
        # Breakers that recover and caches that expire within a test; the
        # defaults (5 s, 30 s, 2 s) are for production.
        service_env={
            "ERP_BREAKER_RESET_S": "1",
            "WAREHOUSE_BREAKER_RESET_S": "1",
            "PRODUCT_CACHE_TTL_S": "2",
            "STOCK_CACHE_TTL_S": "2",
            # Live streams repeat a quiet status every second (15 s in production), so
            # a test sees the keep-alive.
            "ORDER_WATCH_HEARTBEAT_S": "1",
            "INVENTORY_WATCH_HEARTBEAT_S": "1",
            # Every test logs users in from 127.0.0.1: the per-address limits are
            # for production (tests/e2e/test_rate_limits.py runs its own).
            "RATELIMIT_RULES": "generic_key:login,remote_address=5000/second; "
            "generic_key:register,remote_address=5000/second",
            **identity.CHEAP_ARGON2,
            **webhooks.WORKER_SETTINGS,
        },
        edge_limits=EdgeLimits(
            route_rps=2000, credentials_rps=500, address=Quota(5000), user=Quota(1000)
        ),
    )
    with running_platform(config) as state:
        yield state


@pytest.fixture(scope="session")
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """A connection pool to the session's database, for asserting on rows."""
    created = db.create_engine(postgres_url, pool_size=2)
    yield created
    await created.dispose()


@pytest.fixture
def tenant() -> str:
    """A tenant of its own for each test, so tests never see each other's data."""
    return f"t-{uuid.uuid4().hex[:12]}"


def repo_path(*parts: str) -> Path:
    return ROOT.joinpath(*parts)


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session's Redis, for asserting on streams and keys."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def mongo(mongo_url: str) -> Iterator[Database[webhooks.Document]]:
    """The session's MongoDB, with shipments seeded for the test couriers' tenants."""
    for courier in (webhooks.COURIER, webhooks.RIVAL):
        seed_shipments({"MONGO_URL": mongo_url}, courier.tenant, webhooks.SHIPMENTS)
    client: MongoClient[webhooks.Document] = MongoClient(mongo_url, tz_aware=True)
    yield client.get_default_database()
    client.close()


@pytest.fixture
def routing(routing_stub_url: str) -> Iterator[StubAdmin]:
    """The session's (and the platform's) Routing stub, quick (50 ms) unless a test sets
    other faults."""
    admin = StubAdmin(routing_stub_url)
    admin.faults(latency_ms=50)
    yield admin
    admin.faults(latency_ms=50)
