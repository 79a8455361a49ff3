"""ruff (lint + format) and mypy --strict stay clean; CI runs them through the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.launcher import ROOT

BIN = Path(sys.executable).parent


def _run(*argv: str) -> None:
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_lint() -> None:
    _run(str(BIN / "ruff"), "check", ".")


def test_ruff_format() -> None:
    _run(str(BIN / "ruff"), "format", "--check", ".")


def test_mypy_strict() -> None:
    _run(str(BIN / "mypy"))
