"""Run the order service: `python -m services.order` (config from the environment)."""

from __future__ import annotations

import logging

import uvloop

from services.kit import logs, tracing
from services.kit.server import create_server, serve
from services.order.bootstrap import bootstrap
from services.order.config import OrderConfig


async def main() -> None:
    config = OrderConfig.from_env()
    logs.configure("order", config.server.log_level)
    tracing.configure("order", config.server.otlp_endpoint)
    app = bootstrap(config)
    server, port, health = await create_server(app.registrations, config.server.bind)
    logging.getLogger("shop.server").info("listening", extra={"port": port})
    await serve(server, health, grace=config.server.shutdown_grace_s, on_stop=app.close)


if __name__ == "__main__":
    uvloop.run(main())
