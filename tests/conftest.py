"""Session fixtures: the whole platform, started by the launcher's own code.

The same `Platform` class that `./shop up` uses starts PostgreSQL, Redis, the
MongoDB-wire server, the services and Envoy on free ports in a run directory
of this test session, and stops them at the end. A `DATABASE_URL`,
`REDIS_URL` or `MONGO_URL` in the environment is used instead, as with `up`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from pymongo import MongoClient
from pymongo.database import Database
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.launcher import ROOT, infra
from services.launcher.edge_routes import EdgeLimits
from services.launcher.platform import LauncherConfig, Platform, State
from services.launcher.provision import seed_shipments
from tests import identity, webhooks
from tests.upstream_admin import StubAdmin


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `late` run after every other (they read what the session left)."""
    items.sort(key=lambda item: item.get_closest_marker("late") is not None)


@pytest.fixture(scope="session")
def platform() -> Iterator[State]:
    run_dir = ROOT / ".run" / f"test-{os.getpid()}"
    # Every process on a free port; a server whose URL the environment gives is used.
    config = LauncherConfig.on_free_ports(
        run_dir,
        os.environ,
        log_level="INFO",
        # Breakers that recover and caches that expire within a test; the
        # defaults (5 s, 30 s, 2 s) are for production.
        service_env={
            "ERP_BREAKER_RESET_S": "1",
            "WAREHOUSE_BREAKER_RESET_S": "1",
            "PRODUCT_CACHE_TTL_S": "2",
            "STOCK_CACHE_TTL_S": "2",
            # Every test logs users in from 127.0.0.1: the per-address limits are
            # for production (tests/e2e/test_rate_limits.py runs its own).
            "RATELIMIT_RULES": "user=1000/second; remote_address=5000/second",
            **identity.CHEAP_ARGON2,
            **webhooks.WORKER_SETTINGS,
        },
        edge_limits=EdgeLimits(route_rps=2000, credentials_rps=500),
    )
    launched = Platform(config)
    try:
        yield launched.up()
    finally:
        launched.down()
        shutil.rmtree(infra.pg_data_dir(run_dir), ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def engine(platform: State) -> AsyncIterator[AsyncEngine]:
    """A connection pool to the platform's database, for asserting on rows."""
    created = db.create_engine(platform.database_url, pool_size=2)
    yield created
    await created.dispose()


@pytest.fixture
def tenant() -> str:
    """A tenant of its own for each test, so tests never see each other's data."""
    return f"t-{uuid.uuid4().hex[:12]}"


def repo_path(*parts: str) -> Path:
    return ROOT.joinpath(*parts)


@pytest.fixture(scope="session")
def redis_client(platform: State) -> Iterator[redis.Redis]:
    """A client of the platform's Redis, for asserting on streams and keys."""
    client = redis.Redis.from_url(platform.redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def mongo(platform: State) -> Iterator[Database[webhooks.Document]]:
    """The platform's MongoDB, with shipments seeded for the test couriers' tenants."""
    for courier in (webhooks.COURIER, webhooks.RIVAL):
        seed_shipments({"MONGO_URL": platform.mongo_url}, courier.tenant, webhooks.SHIPMENTS)
    client: MongoClient[webhooks.Document] = MongoClient(platform.mongo_url, tz_aware=True)
    yield client.get_default_database()
    client.close()


@pytest.fixture
def routing(platform: State) -> Iterator[StubAdmin]:
    """The platform's Routing stub, quick (50 ms) unless a test sets other faults."""
    admin = StubAdmin(platform.routing_url)
    admin.faults(latency_ms=50)
    yield admin
    admin.faults(latency_ms=50)
