"""ruff (lint + format) and mypy --strict stay clean; CI runs them through the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.launcher import ROOT

BIN = Path(sys.executable).parent


def _run(*argv: str) -> None:
    # Without the suite's PYTHONPATH: the tools must find services/ and gen/
    # from pyproject.toml alone, as they do when a maintainer runs them bare.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_lint() -> None:
    _run(str(BIN / "ruff"), "check", ".")


def test_ruff_format() -> None:
    _run(str(BIN / "ruff"), "format", "--check", ".")


def test_mypy_strict() -> None:
    _run(str(BIN / "mypy"))
