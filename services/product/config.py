"""Product gateway configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import ServerConfig, env_float, env_int, env_str
from services.kit.upstream import UpstreamPolicy


@dataclass(frozen=True)
class ProductConfig:
    server: ServerConfig
    database_url: str
    db_pool_size: int
    cursor_secret: bytes
    idempotency_ttl_s: int
    erp_url: str
    warehouse_url: str
    # Where the inventory service listens: GET /v1/products/{id}/inventory reads its ledger.
    inventory_target: str
    erp: UpstreamPolicy
    warehouse: UpstreamPolicy
    read_budget_s: float
    write_budget_s: float
    product_ttl_s: float
    product_stale_s: float
    stock_ttl_s: float
    stock_stale_s: float
    cache_max_entries: int
    low_stock_threshold: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ProductConfig:
        return cls(
            server=ServerConfig.from_env("PRODUCT", env),
            database_url=env_str(env, "DATABASE_URL"),
            db_pool_size=env_int(env, "PRODUCT_DB_POOL_SIZE", 10),
            cursor_secret=env_str(env, "CURSOR_SECRET").encode(),
            idempotency_ttl_s=env_int(env, "IDEMPOTENCY_TTL_S", 3600),
            erp_url=env_str(env, "ERP_URL"),
            warehouse_url=env_str(env, "WAREHOUSE_URL"),
            inventory_target=env_str(env, "INVENTORY_GRPC_TARGET"),
            erp=UpstreamPolicy.from_env("ERP", env),
            warehouse=UpstreamPolicy.from_env("WAREHOUSE", env),
            read_budget_s=env_float(env, "PRODUCT_READ_BUDGET_S", 3.0),
            write_budget_s=env_float(env, "PRODUCT_WRITE_BUDGET_S", 5.0),
            product_ttl_s=env_float(env, "PRODUCT_CACHE_TTL_S", 30.0),
            product_stale_s=env_float(env, "PRODUCT_CACHE_STALE_S", 300.0),
            stock_ttl_s=env_float(env, "STOCK_CACHE_TTL_S", 2.0),
            stock_stale_s=env_float(env, "STOCK_CACHE_STALE_S", 60.0),
            cache_max_entries=env_int(env, "PRODUCT_CACHE_MAX_ENTRIES", 10000),
            low_stock_threshold=env_int(env, "LOW_STOCK_THRESHOLD", 5),
        )
