"""Order service configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import ServerConfig, env_float, env_int, env_str


@dataclass(frozen=True)
class OrderConfig:
    server: ServerConfig
    database_url: str
    db_pool_size: int
    cursor_secret: bytes
    idempotency_ttl_s: int
    # Where the product gateway and the inventory service listen (host:port).
    product_target: str
    inventory_target: str
    # Seconds between repeats of a quiet WatchOrder stream's current status.
    watch_heartbeat_s: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OrderConfig:
        return cls(
            server=ServerConfig.from_env("ORDER", env),
            database_url=env_str(env, "DATABASE_URL"),
            db_pool_size=env_int(env, "ORDER_DB_POOL_SIZE", 10),
            cursor_secret=env_str(env, "CURSOR_SECRET").encode(),
            idempotency_ttl_s=env_int(env, "IDEMPOTENCY_TTL_S", 3600),
            product_target=env_str(env, "PRODUCT_GRPC_TARGET"),
            inventory_target=env_str(env, "INVENTORY_GRPC_TARGET"),
            watch_heartbeat_s=env_float(env, "ORDER_WATCH_HEARTBEAT_S", 15.0),
        )
