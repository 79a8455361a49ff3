"""The ports a platform claims, checked before `up` starts anything: two platforms (or a
platform and another program) must never share one."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from services import topology
from services.launcher import infra, procs

if TYPE_CHECKING:
    from services.launcher.config import LauncherConfig


def claimed(config: LauncherConfig) -> list[tuple[str, str, int]]:
    """(component, setting, port) for every fixed port `up` will listen on, one per
    process of the topology and one per metrics endpoint (each replica on the next
    port), and with `--observability` the OTLP receiver's and Prometheus's; servers
    given by URL and ports of 0 (any free one) claim none."""
    claims: list[tuple[str, str, int]] = []
    for process in topology.PROCESSES:
        if process.provides and config.urls.get(process.provides):
            continue
        port = config.port(process.port.setting)
        count = config.replica_count(process)
        if process.replicas is None:
            claims.append((process.label, process.port.setting, port))
        elif port:
            claims += [
                (f"{process.label} {i + 1}", process.port.setting, port + i) for i in range(count)
            ]
        if process.admin_port is not None:
            admin = process.admin_port
            claims.append((admin.label, admin.setting, config.port(admin.setting)))
        if process.metrics_port is not None:
            metrics, base = process.metrics_port, config.port(process.metrics_port.setting)
            names = (
                [process.label]
                if process.replicas is None
                else [f"{process.label} {i + 1}" for i in range(count)]
            )
            claims += [
                (f"{name} metrics", metrics.setting, base and base + i)
                for i, name in enumerate(names)
            ]
    if config.observability:
        if not config.otlp_endpoint:
            claims.append(("OTLP receiver", "OTLP_RECEIVER_PORT", config.otlp_receiver_port))
        if shutil.which("prometheus"):
            claims.append(("Prometheus", "PROMETHEUS_PORT", config.prometheus_port))
    return [claim for claim in claims if claim[2]]


def check_free(config: LauncherConfig) -> None:
    """LaunchError naming every claimed port that is taken (by another program or by
    two components), so `up` starts nothing rather than share a port."""
    problems: list[str] = []
    seen: dict[int, str] = {}
    for component, setting, port in claimed(config):
        if port in seen:
            problems.append(f"port {port} is set for both {seen[port]} and {component} ({setting})")
        elif procs.port_in_use(infra.HOST, port):
            problems.append(f"port {port} ({component}, {setting}) is in use")
        seen.setdefault(port, component)
    if problems:
        raise procs.LaunchError(
            "; ".join(problems)
            + ". Stop what holds them (another `./shop up`? `./shop status`, `./shop down`),"
            " or choose free ports in .env (see .env.example); nothing was started. A port"
            " in the system's ephemeral range can also be held for up to a minute by a"
            " connection that just closed: then try again shortly."
        )
