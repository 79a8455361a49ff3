"""The inventory's dev settings: sync the stub data's tenants' stock from the Warehouse stub."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from services.kit.dev import DEMO_TENANT


def dev_env(run_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """INVENTORY_SYNC_TENANTS: the ones given, or the tenants the stubs are seeded with
    (the demo tenant, and the one the recorded v1 responses read)."""
    return {
        "INVENTORY_SYNC_TENANTS": env.get("INVENTORY_SYNC_TENANTS") or f"{DEMO_TENANT},contract"
    }
