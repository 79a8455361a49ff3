"""The launcher against the session's running platform: what `up` leaves in its run
directory, and `status`, `admin` and a second `up` of that run directory."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.launcher import procs
from services.launcher.platform import LauncherConfig, Platform, State
from tests.integration.test_launcher_cli import launcher

pytestmark = pytest.mark.e2e


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secrets(platform: State) -> dict[str, str]:
    values: dict[str, str] = json.loads((Path(platform.run_dir) / "secrets.json").read_text())
    return values


def test_secrets_state_and_logs_are_readable_by_their_owner_only(platform: State) -> None:
    run_dir = Path(platform.run_dir)
    assert _mode(run_dir) == 0o700
    assert _mode(run_dir / "logs") == 0o700
    for name in ("state.json", "secrets.json", "redis/redis.conf"):
        assert _mode(run_dir / name) == 0o600, name
    logs = sorted((run_dir / "logs").glob("*.log"))
    assert {"postgres.log", "redis.log", "envoy.log", "mongo-server.log"} <= {p.name for p in logs}
    assert {log.name: _mode(log) for log in logs} == {log.name: 0o600 for log in logs}


def test_redis_asks_for_the_generated_password(platform: State) -> None:
    password = _secrets(platform)["redis_password"]
    assert f":{password}@" in platform.redis_url
    with redis.Redis.from_url(platform.redis_url) as client:
        assert client.ping()
    anonymous = platform.redis_url.replace(f":{password}@", "")
    with redis.Redis.from_url(anonymous) as client, pytest.raises(redis.AuthenticationError):
        client.ping()


def test_status_shows_the_endpoints_without_passwords(platform: State) -> None:
    shown = launcher(platform.run_dir, "status")
    assert shown.returncode == 0, shown.stderr
    for endpoint in (platform.rest_url, platform.order_grpc_target, platform.erp_url):
        assert endpoint in shown.stdout
    assert "running" in shown.stdout
    assert "STOPPED" not in shown.stdout
    secrets = _secrets(platform)
    for name in ("postgres_password", "redis_password"):
        assert secrets[name] not in shown.stdout
    assert "redis://:***@" in shown.stdout
    assert "postgresql://postgres:***@" in shown.stdout
    # One column for the values, however long the longest name (a label that
    # fills the column would run into its value).
    rows = [line for line in shown.stdout.splitlines() if line.startswith("  ")]
    rest = next(line for line in rows if line.lstrip().startswith("REST edge"))
    column = rest.index("http://")
    endpoints = rows[: rows.index(next(r for r in rows if r.lstrip().startswith("logs"))) + 1]
    assert {line[column - 1] for line in endpoints} == {" "}, shown.stdout
    assert all(line[column] != " " for line in endpoints), shown.stdout


async def test_the_admin_command_works_against_the_running_platform(
    platform: State, engine: AsyncEngine, tenant: str
) -> None:
    made = launcher(
        platform.run_dir, "admin", "create-admin", "--tenant", tenant,
        "--email", "ops@example.com", "--username", "ops",
        SHOP_ADMIN_PASSWORD="correct horse battery staple", ARGON2_MEMORY_KIB="1024",
        ARGON2_TIME_COST="1",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    user_id = uuid.UUID(made.stdout.strip())
    async with engine.connect() as conn:
        role = await conn.scalar(
            sa.text("SELECT role FROM users WHERE tenant_id = :t AND id = :id"),
            {"t": tenant, "id": user_id},
        )
    assert role == "admin"


def test_a_second_up_of_a_running_run_dir_says_it_runs(platform: State) -> None:
    again = Platform(LauncherConfig.from_env({"RUN_DIR": platform.run_dir}))
    with pytest.raises(procs.LaunchError, match=r"already running from .*run `\./shop down` first"):
        again.up()
    assert again.recorded() == State(
        **json.loads((Path(platform.run_dir) / "state.json").read_text())
    )
