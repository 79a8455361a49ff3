"""The queue kit's dedupe with payload digests, and dead-letter ids, on a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.kit import errors
from services.kit.streams import DeadLetters, Message, Queue


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[Queue]:
    client = Redis.from_url(redis_url)
    made = Queue(client, f"test-{uuid.uuid4().hex[:12]}")
    yield made
    await client.delete(made.keys.stream, made.keys.dead, f"test-dedupe:{made.name}")
    await client.aclose()


def message(payload: bytes) -> Message:
    return Message(id="evt-1", tenant="acme", type="thing.happened", payload=payload)


async def test_a_known_key_with_another_digest_is_refused_and_appends_nothing(
    queue: Queue,
) -> None:
    key = f"test-dedupe:{queue.name}"
    first_id, duplicate = await queue.publish_once(message(b"1st"), key, digest="d1")
    assert duplicate is False
    assert await queue.publish_once(message(b"1st"), key, digest="d1") == (first_id, True)
    with pytest.raises(errors.IdempotencyKeyReused):
        await queue.publish_once(message(b"2nd"), key, digest="d2")
    assert await queue.redis.xlen(queue.keys.stream) == 1
    # Without a digest the caller asks for plain dedupe: a duplicate whatever the payload.
    assert await queue.publish_once(message(b"3rd"), key) == (first_id, True)


async def test_a_key_written_before_digests_matches_any_payload(queue: Queue) -> None:
    key = f"test-dedupe:{queue.name}"
    await queue.redis.set(key, "1700000000000-0", ex=60)
    assert await queue.publish_once(message(b"x"), key, digest="d1") == ("1700000000000-0", True)


async def test_a_digest_with_whitespace_is_a_programming_error(queue: Queue) -> None:
    with pytest.raises(ValueError, match="whitespace"):
        await queue.publish_once(message(b"x"), f"test-dedupe:{queue.name}", digest="a b")


async def test_dead_ids_above_64_bits_are_refused_or_absent(queue: Queue) -> None:
    dead = DeadLetters(queue)
    huge = "18446744073709551616-0"
    with pytest.raises(errors.InvalidArgument):
        await dead.list("acme", after=huge)
    assert await dead.get("acme", huge) is None
    assert await dead.replay("acme", huge) is None
    assert await dead.delete("acme", huge) is False
