"""Run the order service: `python -m services.order` (config from the environment)."""

from __future__ import annotations

import uvloop

from services.kit.server import run
from services.order.bootstrap import bootstrap
from services.order.config import OrderConfig


async def main() -> None:
    config = OrderConfig.from_env()
    await run("order", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
