"""A pytest plugin that records every process a test session starts, for tests about what
a session launches: `pytest -p tests.launches` with `SHOP_TEST_LAUNCHES=<file>` appends
each started command line to that file as one JSON array per line.

It listens to the interpreter's `subprocess.Popen` audit event, which every way of starting
a process from Python raises (`subprocess`, `asyncio`'s subprocesses, the launcher).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

VARIABLE = "SHOP_TEST_LAUNCHES"


def pytest_configure(config: pytest.Config) -> None:
    target = os.environ.get(VARIABLE)
    if not target:
        return
    path = Path(target)

    def record(event: str, args: tuple[Any, ...]) -> None:
        if event != "subprocess.Popen":
            return
        executable, argv = args[0], args[1]
        words = [argv] if isinstance(argv, str | bytes) else list(argv or [executable])
        with path.open("a") as out:
            out.write(json.dumps([os.fsdecode(w) for w in words]) + "\n")

    sys.addaudithook(record)


def programs(path: Path) -> set[str]:
    """What the recorded launches ran: executables by name (the one `setpriv` runs, for a
    server run as another user), Python modules as `-m name`."""
    found: set[str] = set()
    for line in path.read_text().splitlines() if path.exists() else []:
        argv: list[str] = json.loads(line)
        if not argv:
            continue
        program = argv[0]
        if Path(program).name == "setpriv":
            program = next((word for word in argv[1:] if not word.startswith("-")), program)
        found.add(Path(program).name)
        found.update(f"-m {module}" for flag, module in itertools.pairwise(argv) if flag == "-m")
    return found
