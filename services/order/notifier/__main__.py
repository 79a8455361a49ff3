"""Run a notifier: `python -m services.order.notifier` (config from the environment).

It sends the `notifications` rows the order service and the pipeline store with
each order change to the notification provider (NOTIFY_URL), each once however
many notifiers run (`services.order.notifier.delivery`), with a health endpoint
on NOTIFIER_GRPC_BIND; on SIGTERM it finishes its round and stops.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.server import run_worker
from services.kit.upstream import Upstream
from services.order.notifier.config import NotifierConfig
from services.order.notifier.delivery import Notifier


@dataclass(frozen=True)
class NotifierProcess:
    engine: AsyncEngine
    provider: Upstream
    notifier: Notifier

    async def run(self, stop: asyncio.Event) -> None:
        await self.notifier.run(stop)

    async def close(self) -> None:
        await self.provider.aclose()
        await self.engine.dispose()


def bootstrap(config: NotifierConfig) -> NotifierProcess:
    """Wire one notifier process from its configuration."""
    engine = db.create_engine(config.database_url, pool_size=config.db_pool_size)
    provider = Upstream("notifications", config.notify_url, config.notify)
    return NotifierProcess(
        engine, provider, Notifier(engine, provider, config.delivery, name=config.name)
    )


async def main() -> None:
    config = NotifierConfig.from_env()
    await run_worker("notifier", config.server, lambda: bootstrap(config))


if __name__ == "__main__":
    uvloop.run(main())
