"""Dead letters of one queue, administered one tenant at a time.

All tenants share the queue's dead stream; every operation filters on the
entry's tenant, and an entry of another tenant answers exactly like an absent
one. Dead entries are never changed, only added and deleted, so checking the
tenant and then deleting cannot race with a change of owner. Replaying is a
script, so two concurrent replays of one dead letter publish it once.

Listing scans the shared stream in id order and skips other tenants'
entries: cheap while dead letters stay few, which is what alerting on the
`dead_lettered` counter is for.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from services.kit import errors
from services.kit.streams.message import Fields, Message, as_text, decode_lenient, int_field
from services.kit.streams.queue import Queue

# A dead id is a stream entry id: `<ms>-<seq>`, each part an unsigned 64-bit
# number (Redis refuses anything larger with an error, not an empty answer).
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_U64 = 2**64


def is_dead_id(value: str) -> bool:
    """Whether `value` is a well-formed stream entry id; callers validate input with it."""
    match = _STREAM_ID.fullmatch(value)
    return match is not None and all(int(part) < _U64 for part in match.groups())


# Dead entries read per round trip while scanning for one tenant's.
SCAN_BATCH = 200


@dataclass(frozen=True)
class DeadLetter:
    """A message that will not be retried: why, after how many attempts, since when.

    `dead_id` is its id in the dead stream, which replay and delete take.
    The message is as it was last tried (its attempt and last error included).
    """

    dead_id: str
    message: Message
    error: str
    attempts: int
    dead_at_ms: int


class DeadLetters:
    """List, inspect, replay and delete one queue's dead letters, per tenant."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._keys = queue.keys

    async def list(
        self, tenant: str, *, after: str | None = None, limit: int = 50
    ) -> tuple[builtins.list[DeadLetter], str | None]:
        """The tenant's dead letters after cursor `after`, oldest first; and the next cursor.

        The cursor is the last returned dead id, None when there are no more.
        """
        if after is not None and not is_dead_id(after):
            raise errors.InvalidArgument.field("cursor", "is not a dead-letter cursor")
        if limit < 1:
            raise errors.InvalidArgument.field("limit", "must be at least 1")
        found: builtins.list[DeadLetter] = []
        start = "-" if after is None else f"({after}"
        async with aclosing(self._scan(tenant, start=start)) as entries:
            async for dead_id, fields in entries:
                if len(found) == limit:
                    return found, found[-1].dead_id  # one more exists
                found.append(_dead_letter(dead_id, fields))
        return found, None

    async def get(self, tenant: str, dead_id: str) -> DeadLetter | None:
        """One dead letter; None when absent or another tenant's."""
        fields = await self._fields(tenant, dead_id)
        return None if fields is None else _dead_letter(dead_id, fields)

    async def replay(self, tenant: str, dead_id: str) -> str | None:
        """Publish the dead letter again as a fresh message (attempt 0, same id and payload).

        Returns its new entry id; None when absent or another tenant's.
        """
        if not is_dead_id(dead_id):
            return None
        (entry_id,) = await self._replay(tenant, [dead_id])
        return entry_id

    async def replay_all(self, tenant: str) -> int:
        """Replay every dead letter of the tenant present now; returns how many."""
        # Bounded by the newest entry now: a replayed message that dies again is
        # appended after it and is not replayed a second time by this call.
        newest = _rows(await self._queue.redis.xrevrange(self._keys.dead, count=1))
        if not newest:
            return 0
        replayed = 0
        async for ids in self._id_batches(tenant, end=newest[0][0]):
            replayed += sum(new is not None for new in await self._replay(tenant, ids))
        return replayed

    async def delete(self, tenant: str, dead_id: str) -> bool:
        """Delete one dead letter; False when absent or another tenant's."""
        if await self._fields(tenant, dead_id) is None:
            return False
        return bool(await self._queue.redis.xdel(self._keys.dead, dead_id))

    async def purge(self, tenant: str) -> int:
        """Delete every dead letter of the tenant; returns how many."""
        deleted = 0
        async for ids in self._id_batches(tenant):
            deleted += int(await self._queue.redis.xdel(self._keys.dead, *ids))
        return deleted

    async def _fields(self, tenant: str, dead_id: str) -> Fields | None:
        if not is_dead_id(dead_id):
            return None
        found = _rows(await self._queue.redis.xrange(self._keys.dead, dead_id, dead_id))
        if not found:
            return None
        fields = found[0][1]
        return fields if fields is not None and _owned(fields, tenant) else None

    async def _replay(self, tenant: str, dead_ids: builtins.list[str]) -> builtins.list[str | None]:
        keys = [self._keys.dead, self._keys.stream]
        args: builtins.list[Any] = [tenant, self._queue.maxlen, *dead_ids]
        replies = await self._queue.scripts.replay(keys=keys, args=args)
        return [None if reply is None else as_text(reply) for reply in replies]

    async def _id_batches(
        self, tenant: str, *, end: str = "+"
    ) -> AsyncGenerator[builtins.list[str], None]:
        """The tenant's dead ids up to `end`, a batch at a time (acting on one between batches)."""
        ids: builtins.list[str] = []
        async for dead_id, _ in self._scan(tenant, start="-", end=end):
            ids.append(dead_id)
            if len(ids) == SCAN_BATCH:
                yield ids
                ids = []
        if ids:
            yield ids

    async def _scan(
        self, tenant: str, *, start: str, end: str = "+"
    ) -> AsyncGenerator[tuple[str, Fields], None]:
        """The tenant's (dead id, fields) from `start` to `end`, in id order."""
        while True:
            reply = await self._queue.redis.xrange(self._keys.dead, start, end, count=SCAN_BATCH)
            batch = _rows(reply)
            for dead_id, fields in batch:
                if fields is not None and _owned(fields, tenant):
                    yield dead_id, fields
            if len(batch) < SCAN_BATCH:
                return
            start = f"({batch[-1][0]}"


def _rows(reply: Sequence[tuple[Any, Any]] | None) -> builtins.list[tuple[str, Fields | None]]:
    """XRANGE entries as (id, fields); fields None for an entry deleted meanwhile."""
    return [(as_text(entry_id), fields) for entry_id, fields in reply or ()]


def _owned(fields: Fields, tenant: str) -> bool:
    return fields.get(b"tenant") == tenant.encode()


def _dead_letter(dead_id: str, fields: Fields) -> DeadLetter:
    return DeadLetter(
        dead_id=dead_id,
        message=decode_lenient("", fields),
        error=fields.get(b"error", b"").decode(errors="replace"),
        attempts=int_field(fields, b"attempts"),
        dead_at_ms=int_field(fields, b"dead_at_ms"),
    )
