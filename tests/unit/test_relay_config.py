"""The relay process reads its routes, batch and poll interval once and refuses bad ones."""

from __future__ import annotations

import pytest

from services.kit.config import ConfigError
from services.launcher import ROOT
from services.relay.config import ROUTES, RelayProcessConfig, parse_routes

BASE = {"DATABASE_URL": "postgresql://u:p@h/db", "REDIS_URL": "redis://h:6379/0"}


def test_defaults_route_orders_inventory_and_exports_to_their_queues() -> None:
    config = RelayProcessConfig.from_env(BASE)
    assert dict(config.routes) == {
        "order": "orders",
        "inventory": "inventory",
        "report_export": "exports",
    }
    assert (config.relay.batch, config.relay.poll_ms) == (100, 200)


def test_overrides() -> None:
    config = RelayProcessConfig.from_env(
        {
            **BASE,
            "RELAY_ROUTES": "order=orders, product = products",
            "RELAY_BATCH": "5",
            "RELAY_POLL_MS": "50",
            "RELAY_GRPC_BIND": "127.0.0.1:7",
        }
    )
    assert dict(config.routes) == {"order": "orders", "product": "products"}
    assert (config.relay.batch, config.relay.poll_ms, config.server.bind) == (
        5,
        50,
        "127.0.0.1:7",
    )


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ("order", "expected aggregate=queue"),
        ("order=", "expected aggregate=queue"),
        ("=orders", "expected aggregate=queue"),
        ("order=orders,order=others", "routed twice"),
    ],
)
def test_malformed_routes_are_refused(routes: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_routes(routes)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_URL": "redis://h"}, "DATABASE_URL must be set"),
        ({**BASE, "RELAY_BATCH": "0"}, "batch must be at least 1"),
        ({**BASE, "RELAY_POLL_MS": "0"}, "at least 1 ms"),
        ({**BASE, "RELAY_BATCH": "many"}, "RELAY_BATCH must be int"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RelayProcessConfig.from_env(env)


def test_every_place_that_names_the_default_routes_names_the_same() -> None:
    """The relay's default routes are written out where no Python runs: the compose
    file's `${RELAY_ROUTES:-...}` and `.env.example`."""
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"RELAY_ROUTES: ${{RELAY_ROUTES:-{ROUTES}}}" in compose
    assert f"\nRELAY_ROUTES={ROUTES}\n" in (ROOT / ".env.example").read_text()
