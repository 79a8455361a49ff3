"""Outbox relay configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from services.kit.config import ConfigError, ServerConfig, env_float, env_int, env_str
from services.kit.housekeeping import HousekeepingConfig
from services.kit.streams.relay import RelayConfig

# Which queue each aggregate type's events go to, unless RELAY_ROUTES says otherwise.
ROUTES = "order=orders,inventory=inventory,report_export=exports"


def parse_routes(text: str) -> dict[str, str]:
    """`aggregate=queue,...` (e.g. `order=orders,product=products`)."""
    routes: dict[str, str] = {}
    for part in text.split(","):
        aggregate, sep, queue = (piece.strip() for piece in part.partition("="))
        if not sep or not aggregate or not queue:
            raise ConfigError(f"RELAY_ROUTES: expected aggregate=queue, got {part.strip()!r}")
        if aggregate in routes:
            raise ConfigError(f"RELAY_ROUTES: {aggregate!r} is routed twice")
        routes[aggregate] = queue
    return routes


@dataclass(frozen=True)
class RelayProcessConfig:
    """Settings of one relay process; any number may run against one database."""

    server: ServerConfig  # its health endpoint
    database_url: str
    redis_url: str
    routes: Mapping[str, str]
    relay: RelayConfig
    housekeeping: HousekeepingConfig

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RelayProcessConfig:
        return cls(
            server=ServerConfig.from_env("RELAY", env),
            database_url=env_str(env, "DATABASE_URL"),
            redis_url=env_str(env, "REDIS_URL"),
            routes=parse_routes(env_str(env, "RELAY_ROUTES", ROUTES)),
            relay=RelayConfig(
                batch=env_int(env, "RELAY_BATCH", 100),
                poll_ms=env_int(env, "RELAY_POLL_MS", 200),
            ),
            housekeeping=HousekeepingConfig(
                interval_s=env_float(env, "HOUSEKEEPING_INTERVAL_S", 300.0),
                inbox_retention=timedelta(days=env_int(env, "INBOX_RETENTION_DAYS", 30)),
                outbox_retention=timedelta(days=env_int(env, "OUTBOX_RETENTION_DAYS", 7)),
            ),
        )
