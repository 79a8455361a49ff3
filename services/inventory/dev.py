"""The inventory's dev settings: sync the demo tenant's stock from the Warehouse stub."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from services.kit.dev import DEMO_TENANT


def dev_env(run_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """INVENTORY_SYNC_TENANTS: the one given, or the demo tenant."""
    return {"INVENTORY_SYNC_TENANTS": env.get("INVENTORY_SYNC_TENANTS") or DEMO_TENANT}
