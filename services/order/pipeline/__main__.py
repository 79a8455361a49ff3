"""Run an order pipeline: `python -m services.order.pipeline` (config from the environment).

It consumes the `orders` queue with the shared queue kit (bounded handlers,
retries with backoff, dead letters, takeover of a dead consumer's messages)
and reconciles unsettled charges beside it, with a health endpoint on
ORDER_PIPELINE_GRPC_BIND; on SIGTERM it stops reading and finishes what it holds.
"""

from __future__ import annotations

import uvloop

from services.kit.server import run_worker
from services.order.pipeline.bootstrap import bootstrap
from services.order.pipeline.config import PipelineConfig


async def main() -> None:
    config = PipelineConfig.from_env()
    await run_worker("order-pipeline", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
