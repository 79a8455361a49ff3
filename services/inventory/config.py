"""Inventory service configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import ServerConfig, env_float, env_int, env_str
from services.kit.upstream import UpstreamPolicy


@dataclass(frozen=True)
class InventoryConfig:
    server: ServerConfig
    database_url: str
    db_pool_size: int
    cursor_secret: bytes
    idempotency_ttl_s: int
    # The reaper: how often it looks for expired reservations and how many it
    # releases per transaction (0 interval: no reaper in this process).
    reaper_interval_s: float
    reaper_batch: int
    # The sync of on-hand units from the Warehouse (product ids and SKUs from the
    # ERP): the tenants it keeps in step at start and every interval (0: only at
    # start and on demand), and the threshold a product it creates starts with.
    erp_url: str
    warehouse_url: str
    erp: UpstreamPolicy
    warehouse: UpstreamPolicy
    sync_tenants: tuple[str, ...]
    sync_interval_s: float
    low_stock_threshold: int
    # Seconds between repeats of a quiet WatchStock stream's current level.
    watch_heartbeat_s: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> InventoryConfig:
        return cls(
            server=ServerConfig.from_env("INVENTORY", env),
            database_url=env_str(env, "DATABASE_URL"),
            db_pool_size=env_int(env, "INVENTORY_DB_POOL_SIZE", 10),
            cursor_secret=env_str(env, "CURSOR_SECRET").encode(),
            idempotency_ttl_s=env_int(env, "IDEMPOTENCY_TTL_S", 3600),
            reaper_interval_s=env_float(env, "INVENTORY_REAPER_INTERVAL_S", 5.0),
            reaper_batch=env_int(env, "INVENTORY_REAPER_BATCH", 100),
            erp_url=env_str(env, "ERP_URL"),
            warehouse_url=env_str(env, "WAREHOUSE_URL"),
            erp=UpstreamPolicy.from_env("ERP", env),
            warehouse=UpstreamPolicy.from_env("WAREHOUSE", env),
            sync_tenants=tuple(
                t.strip() for t in env.get("INVENTORY_SYNC_TENANTS", "").split(",") if t.strip()
            ),
            sync_interval_s=env_float(env, "INVENTORY_SYNC_INTERVAL_S", 300.0),
            low_stock_threshold=env_int(env, "INVENTORY_LOW_STOCK_THRESHOLD", 5),
            watch_heartbeat_s=env_float(env, "INVENTORY_WATCH_HEARTBEAT_S", 15.0),
        )
