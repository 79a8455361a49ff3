"""The ports a platform claims, checked before `up` starts anything: two platforms (or a
platform and another program) must never share one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.launcher import infra, procs

if TYPE_CHECKING:
    from services.launcher.platform import LauncherConfig


def claimed(config: LauncherConfig) -> list[tuple[str, str, int]]:
    """(component, setting, port) for every fixed port `up` will listen on; servers
    given by URL and ports of 0 (any free one) claim none."""
    claims = [
        ("edge (Envoy)", "EDGE_PORT", config.edge_port),
        ("Envoy admin", "ENVOY_ADMIN_PORT", config.admin_port),
        ("order service", "ORDER_GRPC_PORT", config.order_port),
        ("product gateway", "PRODUCT_GRPC_PORT", config.product_port),
        ("user service", "USER_GRPC_PORT", config.user_port),
        ("rate-limit service", "RATELIMIT_GRPC_PORT", config.ratelimit_port),
        ("event gateway", "EVENT_GRPC_PORT", config.event_port),
    ]
    if config.event_worker_port:
        claims += [
            (f"event worker {i + 1}", "EVENT_WORKER_PORT", config.event_worker_port + i)
            for i in range(config.event_workers)
        ]
    for component, setting, port, url in (
        ("ERP stub", "ERP_PORT", config.erp_port, config.erp_url),
        ("Warehouse stub", "WAREHOUSE_PORT", config.warehouse_port, config.warehouse_url),
        ("Routing stub", "ROUTING_PORT", config.routing_port, config.routing_url),
        ("PostgreSQL", "POSTGRES_PORT", config.postgres_port, config.database_url),
        ("Redis", "REDIS_PORT", config.redis_port, config.redis_url),
        ("MongoDB-wire server", "MONGO_PORT", config.mongo_port, config.mongo_url),
    ):
        if not url:
            claims.append((component, setting, port))
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
