"""Run the rate-limit service: `python -m services.ratelimit` (config from the environment)."""

from __future__ import annotations

import uvloop

from services.kit.server import run
from services.ratelimit.bootstrap import bootstrap
from services.ratelimit.config import RateLimitConfig


async def main() -> None:
    config = RateLimitConfig.from_env()
    await run("ratelimit", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
