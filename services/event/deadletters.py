"""Dead-letter administration over every queue the platform runs, one tenant at a time."""

from __future__ import annotations

from collections.abc import Mapping

from services.kit import errors
from services.kit.cursor import page_size
from services.kit.streams import DEAD_ID, DeadLetter, DeadLetters


def _dead_id(value: str) -> str:
    if not DEAD_ID.fullmatch(value):
        raise errors.InvalidArgument.field("id", "must be a dead-letter id such as 1700000000000-0")
    return value


class DeadLetterAdmin:
    """List, inspect, replay and delete dead letters; never across tenants."""

    def __init__(self, queues: Mapping[str, DeadLetters], *, default: str) -> None:
        self._queues = queues
        self.default = default

    def _of(self, queue: str) -> DeadLetters:
        dead = self._queues.get(queue or self.default)
        if dead is None:
            known = ", ".join(sorted(self._queues))
            raise errors.InvalidArgument.field("queue", f"unknown queue; one of: {known}")
        return dead

    async def list(
        self, tenant: str, queue: str, limit: int, cursor: str
    ) -> tuple[list[DeadLetter], str | None]:
        # The kit refuses a malformed cursor itself.
        return await self._of(queue).list(
            tenant, after=cursor or None, limit=page_size(limit, 50, 100)
        )

    async def get(self, tenant: str, queue: str, dead_id: str) -> DeadLetter:
        found = await self._of(queue).get(tenant, _dead_id(dead_id))
        if found is None:
            raise errors.NotFound(f"dead letter {dead_id} not found")
        return found

    async def replay(self, tenant: str, queue: str, dead_id: str) -> None:
        if await self._of(queue).replay(tenant, _dead_id(dead_id)) is None:
            raise errors.NotFound(f"dead letter {dead_id} not found")

    async def replay_all(self, tenant: str, queue: str) -> int:
        return await self._of(queue).replay_all(tenant)

    async def delete(self, tenant: str, queue: str, dead_id: str) -> None:
        if not await self._of(queue).delete(tenant, _dead_id(dead_id)):
            raise errors.NotFound(f"dead letter {dead_id} not found")

    async def purge(self, tenant: str, queue: str) -> int:
        return await self._of(queue).purge(tenant)
