"""Dead-letter administration over every queue the platform runs, one tenant at a time."""

from __future__ import annotations

from collections.abc import Mapping

from services.kit import errors
from services.kit.cursor import CursorCodec, page_size
from services.kit.streams import DeadLetter, DeadLetters, is_dead_id


def _dead_id(value: str) -> str:
    if not is_dead_id(value):
        raise errors.InvalidArgument.field("id", "must be a dead-letter id such as 1700000000000-0")
    return value


class DeadLetterAdmin:
    """List, inspect, replay and delete dead letters; never across tenants.

    List cursors are signed and bound to the tenant and the queue, like every
    list cursor of the platform: an edited cursor, or one of another tenant or
    queue, is refused rather than read.
    """

    def __init__(
        self, queues: Mapping[str, DeadLetters], cursors: CursorCodec, *, default: str
    ) -> None:
        self._queues = queues
        self._cursors = cursors
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
        """A page of the tenant's dead letters and the next page's cursor (None on the last)."""
        dead = self._of(queue)
        scope = f"dlq:{tenant}:{queue or self.default}"
        after = None
        if cursor:
            after = self._cursors.decode(scope, cursor).get("after", "")
            if not is_dead_id(after):
                raise errors.InvalidArgument.field("cursor", "is not a cursor this list issued")
        items, last = await dead.list(tenant, after=after, limit=page_size(limit, 50, 100))
        return items, None if last is None else self._cursors.encode(scope, {"after": last})

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
