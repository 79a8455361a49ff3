"""Run the product gateway: `python -m services.product` (config from the environment)."""

from __future__ import annotations

import uvloop

from services.kit.server import run
from services.product.bootstrap import bootstrap
from services.product.config import ProductConfig


async def main() -> None:
    config = ProductConfig.from_env()
    await run("product", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
