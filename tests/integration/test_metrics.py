"""Every process's Prometheus endpoint (services.kit.metrics) over real connections: the
kit's server answers RPCs and its endpoint counts them under the gRPC ecosystem's
names; a queue worker's endpoint counts what it processed, retried and dead-lettered;
the upstream client, its breaker and the cache count what they did."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from services.kit import errors, metrics
from services.kit.cache import TtlCache
from services.kit.server import Registration, create_server
from services.kit.streams import Message, Permanent, Queue
from services.kit.upstream import Upstream, UpstreamPolicy
from services.launcher import procs
from tests import servers
from tests.integration.test_queue_kit import _taken_by_ghosts, eventually, running, stats_reach
from tests.scrapes import Samples, scrape, value
from tests.servers import ProbeMessage as Msg

SERVICE = "test.metrics.v1.Probe"


async def get(request: Msg, ctx: Any) -> Msg:
    if request.id == "missing":
        raise errors.NotFound("no such thing")
    if request.id == "":
        raise errors.InvalidArgument("an id is required")
    return Msg(id=request.id)


async def watch(request: Msg, ctx: Any) -> AsyncIterator[Msg]:
    yield Msg(id=request.id)
    yield Msg(id=request.id)


@pytest.fixture
async def endpoint() -> AsyncIterator[str]:
    served = await metrics.serve("127.0.0.1:0")
    try:
        yield f"http://127.0.0.1:{served.port}/metrics"
    finally:
        await served.close()


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server, port, _ = await create_server(
        [Registration(SERVICE, servers.probe(SERVICE, get, watch), enforce_access=False)],
        "127.0.0.1:0",
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(None)


def _rpc(method: str, kind: str = "unary", **more: str) -> dict[str, str]:
    return {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": kind, **more}


async def _scrape(url: str) -> Samples:
    return await asyncio.to_thread(scrape, url)


async def test_an_answered_rpc_is_started_handled_ok_and_timed(
    channel: grpc.aio.Channel, endpoint: str
) -> None:
    before = await _scrape(endpoint)
    call = channel.unary_unary(f"/{SERVICE}/Get", Msg.SerializeToString, Msg.FromString)
    assert (await call(Msg(id="a"))).id == "a"
    after = await _scrape(endpoint)

    def delta(name: str, labels: dict[str, str]) -> float:
        return value(after, name, labels) - value(before, name, labels)

    assert delta("grpc_server_started_total", _rpc("Get")) == 1
    assert delta("grpc_server_handled_total", _rpc("Get", grpc_code="OK")) == 1
    assert delta("grpc_server_handling_seconds_count", _rpc("Get")) == 1
    assert delta("grpc_server_handling_seconds_bucket", _rpc("Get", le="+Inf")) == 1
    assert delta("grpc_server_handling_seconds_sum", _rpc("Get")) > 0


async def test_a_failed_rpc_counts_its_status_code(
    channel: grpc.aio.Channel, endpoint: str
) -> None:
    before = await _scrape(endpoint)
    call = channel.unary_unary(f"/{SERVICE}/Get", Msg.SerializeToString, Msg.FromString)
    for request, code in ((Msg(id="missing"), grpc.StatusCode.NOT_FOUND),
                          (Msg(id=""), grpc.StatusCode.INVALID_ARGUMENT),
                          (Msg(id=""), grpc.StatusCode.INVALID_ARGUMENT)):  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call(request)
        assert failed.value.code() is code
    after = await _scrape(endpoint)
    for code, count in (("NOT_FOUND", 1), ("INVALID_ARGUMENT", 2), ("OK", 0)):
        labels = _rpc("Get", grpc_code=code)
        handled = value(after, "grpc_server_handled_total", labels)
        assert handled - value(before, "grpc_server_handled_total", labels) == count, code


async def test_a_streaming_rpc_is_labelled_with_its_kind(
    channel: grpc.aio.Channel, endpoint: str
) -> None:
    before = await _scrape(endpoint)
    call = channel.unary_stream(f"/{SERVICE}/Watch", Msg.SerializeToString, Msg.FromString)
    assert [m.id async for m in call(Msg(id="w"))] == ["w", "w"]
    after = await _scrape(endpoint)
    labels = _rpc("Watch", "server_stream", grpc_code="OK")
    handled = value(after, "grpc_server_handled_total", labels)
    assert handled - value(before, "grpc_server_handled_total", labels) == 1


async def test_health_and_reflection_are_not_counted(
    channel: grpc.aio.Channel, endpoint: str
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    after = await _scrape(endpoint)
    assert value(after, "grpc_server_started_total", {"grpc_service": "grpc.health.v1.Health"}) == 0


# --- queue workers ---------------------------------------------------------------------


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[Queue]:
    client = Redis.from_url(redis_url)
    made = Queue(client, f"test-metrics-{uuid.uuid4().hex[:8]}")
    yield made
    keys = made.keys
    await client.delete(keys.stream, keys.delayed, keys.dead, keys.stats)
    await client.aclose()


async def test_a_worker_counts_processed_retried_and_dead_lettered_messages(
    queue: Queue, endpoint: str
) -> None:
    async def handle(message: Message) -> None:
        if message.id == "flaky":
            raise ConnectionError("the upstream hung up")
        if message.id == "bad":
            raise Permanent("cannot be handled")

    q = {"queue": queue.name}
    async with running(queue, handle):
        for id_ in ("ok-1", "ok-2", "flaky", "bad"):
            await queue.publish(
                Message(id=id_, tenant="acme", type="thing.happened", payload=b"{}")
            )

        async def all_settled() -> bool:
            stats = await queue.stats()
            return stats.processed == 2 and stats.dead_lettered == 2

        await eventually(all_settled)
        samples = await _scrape(endpoint)
    assert value(samples, "shop_queue_settled_total", {**q, "outcome": "processed"}) == 2
    # FAST_RETRY: three attempts, so two retries before the third fails for good.
    assert value(samples, "shop_queue_settled_total", {**q, "outcome": "retried"}) == 2
    assert value(samples, "shop_queue_settled_total", {**q, "outcome": "dead_lettered"}) == 2
    handled = "shop_queue_handler_duration_seconds_count"
    assert value(samples, handled, {**q, "result": "ok"}) == 2
    assert value(samples, handled, {**q, "result": "error"}) == 3
    assert value(samples, handled, {**q, "result": "permanent"}) == 1
    # Read from Redis on the scrape, while the worker ran.
    depth = "shop_queue_depth_messages"
    assert value(samples, depth, {**q, "state": "dead"}) == 2
    assert value(samples, depth, {**q, "state": "pending"}) == 0


async def test_a_worker_counts_the_messages_it_takes_over_from_a_stopped_consumer(
    queue: Queue, endpoint: str
) -> None:
    async def handle(message: Message) -> None:
        return None

    await _taken_by_ghosts(queue, queue.redis, ghosts=1)
    async with running(queue, handle, visibility_timeout_s=0.3, handler_timeout_s=0.2):
        await eventually(stats_reach(queue, processed=1), within=3)
    samples = await _scrape(endpoint)
    q = {"queue": queue.name}
    assert value(samples, "shop_queue_reclaimed_total", q) == 1
    assert value(samples, "shop_queue_settled_total", {**q, "outcome": "processed"}) == 1


# --- the kit's resilience mechanisms ---------------------------------------------------


async def test_upstream_calls_retries_budget_refusals_and_the_breaker_are_counted(
    endpoint: str,
) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    policy = UpstreamPolicy(
        attempt_timeout_s=0.2,
        deadline_s=2.0,
        max_attempts=3,
        backoff_base_s=0.01,
        backoff_cap_s=0.02,
        budget_ratio=0.1,
        budget_burst=1,  # one retry, then the budget refuses
        failure_threshold=2,
        reset_timeout_s=30,
    )
    # Nothing listens there: every attempt is refused, which is always safe to retry.
    up = Upstream(name, f"http://127.0.0.1:{procs.free_port()}", policy)
    try:
        with pytest.raises(errors.Unavailable) as failed:
            await up.request("GET", "/products")
        assert not isinstance(failed.value, errors.CircuitOpen)
        with pytest.raises(errors.CircuitOpen):
            await up.request("GET", "/products")
    finally:
        await up.aclose()
    samples = await _scrape(endpoint)
    of = {"upstream": name}
    assert value(samples, "shop_upstream_calls_total", {**of, "outcome": "failed"}) == 1
    assert value(samples, "shop_upstream_calls_total", {**of, "outcome": "rejected"}) == 1
    assert value(samples, "shop_upstream_attempts_total", of) == 2
    assert value(samples, "shop_upstream_retries_total", of) == 1
    assert value(samples, "shop_upstream_retry_budget_refusals_total", of) == 1
    assert value(samples, "shop_upstream_call_duration_seconds_count", of) == 2
    assert value(samples, "shop_breaker_transitions_total", {**of, "to": "open"}) == 1
    assert value(samples, "shop_breaker_rejections_total", of) == 1
    assert value(samples, "shop_breaker_state", {**of, "state": "open"}) == 1
    assert value(samples, "shop_breaker_state", {**of, "state": "closed"}) == 0


async def test_cache_hits_misses_and_stale_answers_are_counted(endpoint: str) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    now = [0.0]
    cache: TtlCache[str, int] = TtlCache(
        ttl=1, stale_ttl=10, max_entries=10, clock=lambda: now[0], name=name
    )

    async def load() -> int:
        return 7

    async def fail() -> int:
        raise ConnectionError("the upstream is down")

    assert (await cache.get("k", load)).value == 7  # miss
    assert (await cache.get("k", load)).value == 7  # hit
    now[0] = 5.0  # stale: the reload fails, the stale value is served
    assert (await cache.get("k", fail, stale_on=(ConnectionError,))).stale
    samples = await _scrape(endpoint)
    of = {"cache": name}
    assert value(samples, "shop_cache_lookups_total", {**of, "result": "hit"}) == 1
    assert value(samples, "shop_cache_lookups_total", {**of, "result": "miss"}) == 2
    assert value(samples, "shop_cache_lookups_total", {**of, "result": "stale"}) == 1
