"""The queue kit's publish coalescer on a real Redis: concurrent callers share a round
trip, each keeps publish-once's guarantees, and a failure acknowledges nobody."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.kit import errors
from services.kit.redis_client import create_redis
from services.kit.streams import Message, PublishCoalescer, Queue


def message(event_id: str, payload: bytes = b"{}") -> Message:
    return Message(id=event_id, tenant="acme", type="thing.happened", payload=payload)


@pytest.fixture
async def one_connection(redis_url: str) -> AsyncIterator[Redis]:
    """A client whose pool holds a single connection, waited for at most 0.5 s."""
    client = create_redis(redis_url, timeout_s=0.5, max_connections=1, blocking=True)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(one_connection: Redis, redis: Redis) -> AsyncIterator[Queue]:
    made = Queue(one_connection, f"test-{uuid.uuid4().hex[:12]}")
    yield made
    await redis.delete(made.keys.stream, *await redis.keys(f"test-seen:{made.name}:*"))


def key(queue: Queue, event_id: str) -> str:
    return f"test-seen:{queue.name}:{event_id}"


async def test_concurrent_callers_share_one_connection_and_each_is_appended_once(
    queue: Queue, redis: Redis
) -> None:
    publisher = PublishCoalescer(queue, max_batch=64)
    ids = [f"evt-{i}" for i in range(300)]
    reads_before = (await redis.info("stats"))["total_reads_processed"]
    answers = await asyncio.gather(
        *(publisher.publish_once(message(i), key(queue, i), digest="d") for i in ids)
    )
    # A round trip per caller would be at least one read of Redis's each: 300 callers
    # took a few pipelines (and the reads of this test's own INFO calls).
    reads = (await redis.info("stats"))["total_reads_processed"] - reads_before
    assert reads < len(ids) // 4, reads
    assert all(duplicate is False for _, duplicate in answers)
    assert len({entry_id for entry_id, _ in answers}) == len(ids)
    entries = await redis.xrange(queue.keys.stream)
    assert [fields[b"id"].decode() for _, fields in entries] == ids
    assert [entry_id.decode() for entry_id, _ in entries] == [e for e, _ in answers]


async def test_the_same_id_twice_in_one_batch_is_enqueued_once(queue: Queue, redis: Redis) -> None:
    publisher = PublishCoalescer(queue)
    calls = [
        publisher.publish_once(message("evt-1"), key(queue, "evt-1"), digest="d1") for _ in range(6)
    ]
    other = publisher.publish_once(message("evt-1", b"[]"), key(queue, "evt-1"), digest="d2")
    answers = await asyncio.gather(*calls, other, return_exceptions=True)
    *published, refused = answers
    first_id = published[0][0]  # type: ignore[index]
    assert published == [(first_id, False)] + [(first_id, True)] * 5
    # Another body under a known id is refused for that caller alone.
    assert isinstance(refused, errors.IdempotencyKeyReused)
    assert await redis.xlen(queue.keys.stream) == 1


async def test_a_failing_message_mid_batch_fails_alone(queue: Queue, redis: Redis) -> None:
    publisher = PublishCoalescer(queue)
    # A dedupe key of the wrong type makes that message's script fail inside Redis.
    await redis.rpush(key(queue, "evt-1"), "not a dedupe value")
    answers = await asyncio.gather(
        *(publisher.publish_once(message(i), key(queue, i)) for i in ("evt-0", "evt-1", "evt-2")),
        return_exceptions=True,
    )
    assert isinstance(answers[1], RedisError)
    assert [a[1] for a in (answers[0], answers[2])] == [False, False]  # type: ignore[index]
    entries = await redis.xrange(queue.keys.stream)
    assert [fields[b"id"] for _, fields in entries] == [b"evt-0", b"evt-2"]


async def test_a_failed_round_trip_answers_every_caller_with_an_error_and_none_falsely(
    redis_url: str, redis: Redis
) -> None:
    client = create_redis(redis_url, timeout_s=0.3, retries=False)
    queue = Queue(client, f"test-{uuid.uuid4().hex[:12]}")
    publisher = PublishCoalescer(queue)
    ids = [f"evt-{i}" for i in range(50)]
    try:
        # Redis holds every write for longer than the client's socket timeout: the
        # pipeline is sent, and its replies never come in time.
        await redis.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        answers = await asyncio.gather(
            *(publisher.publish_once(message(i), key(queue, i)) for i in ids),
            return_exceptions=True,
        )
        assert all(isinstance(a, RedisError) for a in answers), answers
        await redis.execute_command("CLIENT", "UNPAUSE")
        # Whatever Redis ran of that pipeline is in the stream once; a retry of each
        # delivery adds the rest, and nothing twice.
        retried = await asyncio.gather(
            *(publisher.publish_once(message(i), key(queue, i)) for i in ids)
        )
        assert len({entry_id for entry_id, _ in retried}) == len(ids)
        entries = await redis.xrange(queue.keys.stream)
        assert sorted(fields[b"id"].decode() for _, fields in entries) == sorted(ids)
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
        await redis.delete(queue.keys.stream, *[key(queue, i) for i in ids])
        await client.aclose()


async def test_scripts_flushed_from_redis_are_loaded_again(queue: Queue, redis: Redis) -> None:
    publisher = PublishCoalescer(queue)
    assert (await publisher.publish_once(message("evt-1"), key(queue, "evt-1")))[1] is False
    await redis.script_flush()
    answers = await asyncio.gather(
        *(publisher.publish_once(message(i), key(queue, i)) for i in ("evt-1", "evt-2"))
    )
    assert [duplicate for _, duplicate in answers] == [True, False]
    assert await redis.xlen(queue.keys.stream) == 2


async def test_a_caller_that_gave_up_before_its_round_trip_is_not_sent(
    queue: Queue, redis: Redis
) -> None:
    publisher = PublishCoalescer(queue, max_batch=1)
    first = asyncio.create_task(publisher.publish_once(message("evt-0"), key(queue, "evt-0")))
    given_up = asyncio.create_task(publisher.publish_once(message("evt-1"), key(queue, "evt-1")))
    await asyncio.sleep(0)  # both are waiting; only the first is in flight
    given_up.cancel()
    await first
    with pytest.raises(asyncio.CancelledError):
        await given_up
    await publisher.publish_once(message("evt-2"), key(queue, "evt-2"))
    entries = await redis.xrange(queue.keys.stream)
    assert [fields[b"id"] for _, fields in entries] == [b"evt-0", b"evt-2"]
