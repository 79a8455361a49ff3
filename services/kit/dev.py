"""Dev settings of a local run: the secrets a run directory keeps, and the hook type
through which each service makes its own (services/topology.py names the hooks).

Secrets are generated on first use into the run directory's `secrets.json`
(owner-only) and kept there, so a platform started again from the same run
directory keeps its passwords, keys and webhook secrets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

SECRETS_FILE = "secrets.json"
# The tenant whose demo data a local run seeds (the stubs' catalogue, an admin, a courier).
DEMO_TENANT = "demo"


class DevEnv(Protocol):
    """A service's dev settings for one run directory; `env` is what it is started with
    so far (a setting given there wins over a generated one)."""

    def __call__(self, run_dir: Path, env: Mapping[str, str]) -> dict[str, str]: ...


def stored_secrets(run_dir: Path, makers: Mapping[str, Callable[[], str]]) -> dict[str, str]:
    """Every secret of the run directory, after making and storing each named one that
    it does not hold yet (an existing one is never replaced)."""
    path = run_dir / SECRETS_FILE
    values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    values.update({name: make() for name, make in makers.items() if name not in values})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when it existed with a wider mode
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(values, indent=2))
    return values


def stored_secret(run_dir: Path, name: str, make: Callable[[], str]) -> str:
    """One secret of the run directory, made and stored on first use."""
    return stored_secrets(run_dir, {name: make})[name]
