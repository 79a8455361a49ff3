"""Run the user service: `python -m services.user` (config from the environment)."""

from __future__ import annotations

import uvloop

from services.kit.server import run
from services.user.bootstrap import bootstrap
from services.user.config import UserConfig


async def main() -> None:
    config = UserConfig.from_env()
    await run("user", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
