"""The launcher as a user meets it without a running platform: `./shop` and
`python -m services.launcher` commands (tests/e2e/test_running_platform.py has the
commands against a running one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.launcher import PYTHONPATH, ROOT


def launcher(run_dir: str | Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`./shop ARGS` as the script runs it (the venv's python, the repo on PYTHONPATH)."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "services.launcher", *args],
        env={**base, "PYTHONPATH": PYTHONPATH, "RUN_DIR": str(run_dir), **env},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_admin_without_a_running_platform_says_how_to_start_one(tmp_path: Path) -> None:
    refused = launcher(
        tmp_path, "admin", "create-admin", "--tenant", "t", "--email", "e@example.com",
        "--username", "e",
    )  # fmt: skip
    assert refused.returncode == 1
    assert "not running" in refused.stderr
    assert "./shop up --detach" in refused.stderr


def test_down_and_status_with_nothing_running_say_so(tmp_path: Path) -> None:
    down = launcher(tmp_path, "down")
    assert (down.returncode, down.stdout) == (
        0,
        f"nothing to stop: no platform recorded in {tmp_path}\n",
    )
    status = launcher(tmp_path, "status")
    assert status.returncode == 0
    assert status.stdout.startswith("not running")


@pytest.fixture
def bare_clone(tmp_path: Path) -> Path:
    """The shop script alone in a folder: no venv, nothing installed."""
    shutil.copy2(ROOT / "shop", tmp_path / "shop")
    return tmp_path


@pytest.mark.parametrize("args", [[], ["help"], ["--help"], ["-h"]])
def test_help_prints_the_commands_and_installs_nothing(bare_clone: Path, args: list[str]) -> None:
    shown = subprocess.run(["./shop", *args], cwd=bare_clone, capture_output=True, text=True)
    assert shown.returncode == 0
    for command in ("up", "status", "down", "test", "admin create-admin", "generate"):
        assert f"./shop {command}" in shown.stdout
    assert sorted(p.name for p in bare_clone.iterdir()) == ["shop"]


def test_an_unknown_command_is_refused(bare_clone: Path) -> None:
    refused = subprocess.run(["./shop", "stat"], cwd=bare_clone, capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.startswith("shop: unknown command 'stat'\n")
    assert sorted(p.name for p in bare_clone.iterdir()) == ["shop"]
