"""Run the inventory service: `python -m services.inventory` (config from the environment)."""

from __future__ import annotations

import uvloop

from services.inventory.bootstrap import bootstrap
from services.inventory.config import InventoryConfig
from services.kit.server import run


async def main() -> None:
    config = InventoryConfig.from_env()
    await run("inventory", config.server, lambda: bootstrap(config, background=True))


if __name__ == "__main__":
    uvloop.run(main())
