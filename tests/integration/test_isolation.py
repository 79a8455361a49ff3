"""An integration module runs on its own with only the servers it uses: no Envoy, no
platform. The folder's conftest refuses a test that asks for the platform."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.launcher import PYTHONPATH, ROOT
from tests.launches import VARIABLE, programs

SERVER_URLS = ("DATABASE_URL", "REDIS_URL", "MONGO_URL")


def _pytest(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A pytest session of its own, starting its own servers (no server URLs given)."""
    base = {k: v for k, v in os.environ.items() if k not in SERVER_URLS}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd, env={**base, "PYTHONPATH": PYTHONPATH, **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_one_queue_kit_test_starts_redis_alone(tmp_path: Path) -> None:
    launches = tmp_path / "launches.jsonl"
    ran = _pytest(
        "-p", "tests.launches", "tests/integration/test_queue_kit.py",
        "-k", "test_published_messages_are_handled_then_acked_and_deleted",
        cwd=ROOT, **{VARIABLE: str(launches)},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert "1 passed" in ran.stdout
    started = programs(launches)
    assert "redis-server" in started  # what the session started was recorded
    unwanted = {"envoy", "postgres", "initdb", "nx-27017"}
    assert not started & unwanted, started
    assert not {p for p in started if p.startswith(("-m services", "-m stubs"))}, started


BAD_MODULE = """
import pytest


@pytest.fixture
def through_a_fixture(platform):
    return platform


def test_asks_for_the_platform(platform):
    pass


def test_asks_through_a_fixture(through_a_fixture):
    pass


def test_asks_for_the_edge(http):
    pass


def test_needs_no_platform(tmp_path):
    pass
"""


def test_a_test_that_asks_for_the_platform_stops_collection(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "from tests.integration.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    (tmp_path / "integration").mkdir()
    (tmp_path / "integration" / "test_bad.py").write_text(BAD_MODULE)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "test_e2e.py").write_text(BAD_MODULE)
    refused = _pytest("--rootdir", str(tmp_path), cwd=tmp_path)
    assert refused.returncode == 4, refused.stdout + refused.stderr  # a usage error
    said = refused.stderr
    assert "integration tests run without the platform or Envoy" in said
    for test, fixtures in (
        ("test_asks_for_the_platform", "platform"),
        ("test_asks_through_a_fixture", "platform"),
        ("test_asks_for_the_edge", "http"),
    ):
        assert f"integration/test_bad.py::{test}: {fixtures}\n" in said
    assert "test_needs_no_platform" not in said
    assert "elsewhere" not in said  # only the integration folder is held to it
    assert "tests/e2e/" in said
