"""Integration tests run without Envoy: each starts only the servers and the one service
or stub it tests (the session fixtures per server, a service in-process or as one
process), so `pytest tests/integration/<module>` is quick on its own.

A test here that asks for the whole platform or the edge (`platform`, `http`, `api`)
stops collection with a message saying where it belongs: tests/e2e/.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.kit.streams import Queue

# Fixtures that start, or talk through, the whole platform and its Envoy.
PLATFORM_FIXTURES = frozenset({"platform", "http", "api"})
FOLDER = "integration"


def _in_integration(item: pytest.Item, root: Path) -> bool:
    return item.path.is_relative_to(root) and FOLDER in item.path.relative_to(root).parts[:-1]


def platform_requests(items: list[pytest.Item], root: Path) -> list[str]:
    """`node id: fixtures` of each integration test that needs the platform or Envoy."""
    found = []
    for item in items:
        if not _in_integration(item, root):
            continue
        wanted = sorted(PLATFORM_FIXTURES.intersection(item.fixturenames))
        if wanted:
            found.append(f"{item.nodeid}: {', '.join(wanted)}")
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    refused = platform_requests(items, config.rootpath)
    if refused:
        raise pytest.UsageError(
            "integration tests run without the platform or Envoy; these ask for them "
            "(directly or through a fixture):\n  " + "\n  ".join(refused) + "\n"
            "Use the per-server fixtures (postgres_url, redis_url, mongo_url, "
            "routing_stub_url) and start only the service under test, or move a test of "
            "the whole platform through Envoy to tests/e2e/."
        )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client of the session's Redis."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(redis: Redis) -> AsyncIterator[Queue]:
    """A queue of the test's own on the session's Redis, its keys deleted afterwards."""
    made = Queue(redis, f"test-{uuid.uuid4().hex[:12]}")
    yield made
    keys = made.keys
    await redis.delete(keys.stream, keys.delayed, keys.dead, keys.stats)
