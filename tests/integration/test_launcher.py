"""Launcher behaviour that a fresh clone or a failed start depends on."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from pathlib import Path

import asyncpg
import pytest

from services import topology
from services.launcher import edge, edge_routes, infra, ports, procs
from services.launcher.platform import LauncherConfig, Platform

PORT_SETTINGS = [setting for _, setting, _ in ports.claimed(LauncherConfig(run_dir=Path()))]


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


# --- PostgreSQL from a folder `nobody` cannot traverse (as root) ----------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged-copy path is root's")


def _private_site(tmp_path: Path) -> Path:
    site = tmp_path / "private-site"
    site.mkdir(mode=0o700)
    site.chmod(0o700)
    return site


def _cleanup(package: Path, run_dir: Path) -> None:
    copy = infra.pg_binaries_copy(package)
    for leftover in [copy, *copy.parent.glob(f"{copy.name}.*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.rmtree(infra.pg_data_dir(run_dir), ignore_errors=True)


@as_root
def test_postgres_starts_as_root_from_an_install_that_nobody_cannot_reach(tmp_path: Path) -> None:
    installed = infra.pg_package_dir()
    site = _private_site(tmp_path)
    package = site / installed.name
    shutil.copytree(installed, package, symlinks=True)
    libs = installed.parent / f"{installed.name}.libs"
    shutil.copytree(libs, site / libs.name, symlinks=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    try:
        proc, url = infra.start_postgres(
            run_dir, procs.free_port(), "private-site-password", {}, package=package
        )
        try:
            assert asyncio.run(_select_one(url)) == 1
        finally:
            procs.stop(proc)
    finally:
        _cleanup(package, run_dir)


async def _select_one(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


@as_root
def test_postgres_binaries_that_cannot_load_fail_clearly_and_leave_nothing(
    tmp_path: Path,
) -> None:
    # initdb without the libpq it links: what a copy without the wheel's libs was.
    package = _private_site(tmp_path) / infra.PG_PACKAGE
    (package / "pginstall" / "bin").mkdir(parents=True)
    for binary in ("initdb", "postgres"):
        shutil.copy2(
            infra.pg_package_dir() / "pginstall" / "bin" / binary, package / "pginstall" / "bin"
        )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    try:
        with pytest.raises(procs.LaunchError) as failed:
            infra.start_postgres(run_dir, procs.free_port(), "pw", {}, package=package)
        message = str(failed.value)
        assert "nobody" in message
        assert "libpq" in message
        assert "DATABASE_URL" in message
        copy = infra.pg_binaries_copy(package)
        assert not copy.exists()
        assert not list(copy.parent.glob(f"{copy.name}.*"))
        assert not infra.pg_data_dir(run_dir).exists()
        assert list(run_dir.iterdir()) == []
    finally:
        _cleanup(package, run_dir)


# --- Ports ----------------------------------------------------------------------------------


def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


def _listen() -> socket.socket:
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind((infra.HOST, 0))
    held.listen()
    return held


def test_up_refuses_ports_in_use_before_starting_anything(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    before = _children()
    with _listen() as edge_socket, _listen() as order_socket:
        edge_port, order_port = edge_socket.getsockname()[1], order_socket.getsockname()[1]
        config = LauncherConfig.from_env(
            {"RUN_DIR": str(run_dir), **dict.fromkeys(PORT_SETTINGS, "0"),
             "EDGE_PORT": str(edge_port), "ORDER_GRPC_PORT": str(order_port)}
        )  # fmt: skip
        with pytest.raises(procs.LaunchError) as refused:
            Platform(config).up()
    message = str(refused.value)
    assert f"port {edge_port} (edge (Envoy), EDGE_PORT) is in use" in message
    assert f"port {order_port} (order service, ORDER_GRPC_PORT) is in use" in message
    assert not run_dir.exists()
    assert _children() <= before


def test_two_components_on_one_port_are_refused(tmp_path: Path) -> None:
    port = procs.free_port()
    config = LauncherConfig.from_env(
        {"RUN_DIR": str(tmp_path), **dict.fromkeys(PORT_SETTINGS, "0"),
         "ERP_PORT": str(port), "WAREHOUSE_PORT": str(port)}
    )  # fmt: skip
    with pytest.raises(procs.LaunchError, match=f"port {port} is set for both ERP stub and"):
        ports.check_free(config)


def test_a_second_envoy_cannot_listen_on_the_edge_port_of_another(tmp_path: Path) -> None:
    # Upstreams need not be up: Envoy binds its listener regardless.
    nowhere = edge_routes.Endpoint(infra.HOST, procs.free_port())
    edge_port = procs.free_port()
    started: list[procs.Proc] = []
    try:
        for name in ("first", "second"):
            settings = edge.EdgeSettings(
                edge_address=infra.HOST, edge_port=edge_port, admin_address=infra.HOST,
                admin_port=procs.free_port(), upstreams=dict.fromkeys(topology.clusters(), nowhere),
            )  # fmt: skip
            config = tmp_path / f"{name}.yaml"
            config.write_text(edge.render(settings))
            started.append(
                procs.start(
                    name,
                    [
                        infra.executable("envoy"),
                        "-c",
                        str(config),
                        "--concurrency",
                        "1",
                        "--disable-hot-restart",
                    ],
                    log_dir=tmp_path,
                    env={},
                )
            )
            if name == "first":
                procs.wait_until(
                    started[0], lambda: procs.tcp_open(infra.HOST, edge_port), what="listen"
                )
        second = started[1].popen
        second.wait(timeout=30)
        assert second.returncode != 0
        assert "Address already in use" in started[1].log.read_text()
        assert started[0].popen.poll() is None
    finally:
        for proc in started:
            procs.stop(proc)


def test_a_failed_first_start_removes_the_run_dir_it_made(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    nowhere = f"127.0.0.1:{procs.free_port()}"
    config = LauncherConfig.from_env(
        {"RUN_DIR": str(run_dir), **dict.fromkeys(PORT_SETTINGS, "0"),
         "DATABASE_URL": f"postgresql://shop:pw@{nowhere}/shop",
         "REDIS_URL": f"redis://{nowhere}/0", "MONGO_URL": f"mongodb://{nowhere}/shop"}
    )  # fmt: skip
    before = _children()
    with pytest.raises(procs.LaunchError, match="migrations failed"):
        Platform(config).up()
    assert not run_dir.exists()
    assert _children() <= before
