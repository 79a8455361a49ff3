"""Putting the platform's data in place: schema migrations, the demo admin and the demo
shipments. Each step is idempotent, so every `up` runs them all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from services.launcher import PYTHONPATH, ROOT, procs


def migrate(env: Mapping[str, str]) -> None:
    """Bring the database schema to the newest Alembic revision."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "services" / "migrations" / "alembic.ini"),
         "upgrade", "head"],
        env=dict(env), cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise procs.LaunchError(f"migrations failed:\n{result.stderr[-2000:]}")


def seed_admin(env: Mapping[str, str], tenant: str, email: str, password: str) -> None:
    """Create (or reset) an admin of `tenant` with the user service's own CLI."""
    result = subprocess.run(
        [sys.executable, "-m", "services.user.admin", "create-admin", "--tenant", tenant,
         "--email", email, "--username", email.split("@")[0]],
        env={**env, "PYTHONPATH": PYTHONPATH, "SHOP_ADMIN_PASSWORD": password},
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise procs.LaunchError(f"seeding the {tenant} admin failed:\n{result.stderr[-2000:]}")


def seed_shipments(env: Mapping[str, str], tenant: str, count: int) -> None:
    """Give `tenant` the stubs' shipments and active orders in MongoDB (idempotent)."""
    result = subprocess.run(
        [sys.executable, "-m", "stubs.shipments", "--mongo-url", env["MONGO_URL"],
         "--tenant", tenant, "--count", str(count)],
        env={**env, "PYTHONPATH": PYTHONPATH}, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise procs.LaunchError(f"seeding {tenant}'s shipments failed:\n{result.stderr[-2000:]}")
