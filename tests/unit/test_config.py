"""Configuration is read once from the environment and refuses bad values clearly."""

from __future__ import annotations

import pytest

from services.kit.config import ConfigError
from services.order.config import OrderConfig

BASE = {
    "DATABASE_URL": "postgresql://u:p@h/db",
    "CURSOR_SECRET": "s" * 32,
    "PRODUCT_GRPC_TARGET": "product:7052",
    "INVENTORY_GRPC_TARGET": "inventory:7062",
}


def test_defaults_and_overrides() -> None:
    config = OrderConfig.from_env(
        {**BASE, "ORDER_GRPC_BIND": "0.0.0.0:1", "IDEMPOTENCY_TTL_S": "60"}
    )
    assert (config.server.bind, config.idempotency_ttl_s, config.db_pool_size) == (
        "0.0.0.0:1",
        60,
        10,
    )
    assert config.server.otlp_endpoint is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CURSOR_SECRET": "s" * 32}, "DATABASE_URL must be set"),
        ({"DATABASE_URL": "x"}, "CURSOR_SECRET must be set"),
        ({**BASE, "ORDER_DB_POOL_SIZE": "ten"}, "ORDER_DB_POOL_SIZE must be int"),
        ({**BASE, "SHUTDOWN_GRACE_S": "soon"}, "SHUTDOWN_GRACE_S must be float"),
    ],
)
def test_missing_or_malformed_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OrderConfig.from_env(env)
