"""Run the event gateway: `python -m services.event` (config from the environment)."""

from __future__ import annotations

import uvloop

from services.event.bootstrap import bootstrap
from services.event.config import EventConfig
from services.kit.server import run


async def main() -> None:
    config = EventConfig.from_env()
    await run("event", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
