"""Launcher behaviour that a fresh clone or a failed start depends on."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from services.launcher import infra, procs


def test_a_failed_start_leaves_no_process_behind(tmp_path: Path) -> None:
    proc = procs.start(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log_dir=tmp_path, env={}
    )
    with pytest.raises(procs.LaunchError), procs.stop_on_error(proc):
        procs.wait_until(proc, lambda: False, what="something that never happens", timeout=0.3)
    assert not procs.alive(proc.pid)


def test_a_cluster_left_by_a_removed_run_dir_is_rebuilt_for_the_new_password(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    try:
        proc, _ = infra.start_postgres(run_dir, procs.free_port(), "first-password", {})
        procs.stop(proc)
        # The run dir (secrets, marker) goes; a cluster outside it (as root) may stay.
        shutil.rmtree(run_dir)
        run_dir.mkdir()
        proc, url = infra.start_postgres(run_dir, procs.free_port(), "second-password", {})
        procs.stop(proc)
        assert ":second-password@" in url
    finally:
        shutil.rmtree(infra.pg_data_dir(run_dir), ignore_errors=True)
