"""The global rate-limit service over native gRPC: a server on port 0, a real Redis."""

from __future__ import annotations

import asyncio
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from services.kit.config import ServerConfig
from services.kit.server import create_server
from services.ratelimit.bootstrap import SERVICE_NAME, bootstrap
from services.ratelimit.config import RateLimitConfig
from services.ratelimit.rules import Rules

RULES = "user=3/hour; remote_address=2/second; generic_key:login,remote_address=2/hour"
OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
HOUR = rls_pb2.RateLimitResponse.RateLimit.HOUR


def _config(redis_url: str) -> RateLimitConfig:
    return RateLimitConfig(
        server=ServerConfig(
            bind="127.0.0.1:0", log_level="WARNING", otlp_endpoint=None, shutdown_grace_s=1
        ),
        redis_url=redis_url,
        redis_timeout_s=1.0,
        rules=Rules.parse(RULES),
    )


@asynccontextmanager
async def _serve(redis_url: str) -> AsyncIterator[grpc.aio.Channel]:
    app = bootstrap(_config(redis_url))
    server, port, _health = await create_server(app.registrations, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(1)
        await app.close()


@pytest.fixture(scope="module")
async def channel(redis_url: str) -> AsyncIterator[grpc.aio.Channel]:
    async with _serve(redis_url) as ch:
        yield ch


@pytest.fixture(scope="module")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the same Redis, for looking at the counters."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def domain() -> str:
    """A domain of its own for each test, so no two tests share a counter."""
    return f"test-{uuid.uuid4().hex[:12]}"


def _request(domain: str, *descriptors: dict[str, str], hits: int = 0) -> Any:
    return rls_pb2.RateLimitRequest(
        domain=domain,
        hits_addend=hits,
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[
                    ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in d.items()
                ]
            )
            for d in descriptors
        ],
    )


async def _check(channel: grpc.aio.Channel, request: Any) -> Any:
    return await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=5)


def _headers(response: Any) -> dict[str, str]:
    return {h.key: h.value for h in response.response_headers_to_add}


async def _start_of_a_second() -> None:
    """Sleep to just past a second boundary, so a burst stays inside one window."""
    now = time.time()
    await asyncio.sleep(math.ceil(now) - now + 0.02)


async def test_health_reports_the_service_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_under_the_limit_is_ok_and_remaining_counts_down(
    channel: grpc.aio.Channel, domain: str
) -> None:
    for remaining in (2, 1, 0):
        response = await _check(channel, _request(domain, {"user": "alice"}))
        assert response.overall_code == OK
        (status,) = response.statuses
        assert (status.code, status.limit_remaining) == (OK, remaining)
        limit = status.current_limit
        assert (limit.requests_per_unit, limit.unit, limit.name) == (3, HOUR, "user")
        assert 1 <= status.duration_until_reset.seconds <= 3600
        assert _headers(response) == {
            "ratelimit": f'"user";r={remaining};t={status.duration_until_reset.seconds}',
            "ratelimit-policy": '"user";q=3;w=3600',
        }


async def test_over_the_limit_is_refused_with_retry_after_and_ratelimit_headers(
    channel: grpc.aio.Channel, domain: str
) -> None:
    for _ in range(3):
        assert (await _check(channel, _request(domain, {"user": "alice"}))).overall_code == OK
    response = await _check(channel, _request(domain, {"user": "alice"}))
    assert response.overall_code == OVER_LIMIT
    (status,) = response.statuses
    assert (status.code, status.limit_remaining) == (OVER_LIMIT, 0)
    reset = status.duration_until_reset.seconds
    assert _headers(response) == {
        "retry-after": str(reset),
        "ratelimit": f'"user";r=0;t={reset}',
        "ratelimit-policy": '"user";q=3;w=3600',
    }


async def test_two_users_do_not_share_a_bucket(channel: grpc.aio.Channel, domain: str) -> None:
    alice = await _check(channel, _request(domain, {"user": "alice"}, hits=4))
    bob = await _check(channel, _request(domain, {"user": "bob"}))
    assert (alice.overall_code, bob.overall_code) == (OVER_LIMIT, OK)
    assert bob.statuses[0].limit_remaining == 2


async def test_hits_addend_counts_that_many_hits(channel: grpc.aio.Channel, domain: str) -> None:
    first = await _check(channel, _request(domain, {"user": "carol"}, hits=2))
    assert (first.overall_code, first.statuses[0].limit_remaining) == (OK, 1)
    second = await _check(channel, _request(domain, {"user": "carol"}, hits=2))
    assert (second.overall_code, second.statuses[0].limit_remaining) == (OVER_LIMIT, 0)


async def test_unmatched_descriptors_are_ok_and_create_no_redis_keys(
    channel: grpc.aio.Channel, redis: Redis, domain: str
) -> None:
    response = await _check(
        channel,
        _request(
            domain,
            {"tenant": "t-1"},
            {"user": "alice", "remote_address": "10.0.0.1"},
            {"generic_key": "search", "remote_address": "10.0.0.1"},
            hits=100,
        ),
    )
    assert response.overall_code == OK
    assert [(s.code, s.HasField("current_limit")) for s in response.statuses] == [(OK, False)] * 3
    assert _headers(response) == {}
    assert await redis.keys(f"rl:{domain}:*") == []


async def test_only_matched_descriptors_are_counted_and_keep_their_place(
    channel: grpc.aio.Channel, redis: Redis, domain: str
) -> None:
    response = await _check(
        channel, _request(domain, {"tenant": "t-1"}, {"remote_address": "::1"}, {"x": "y"})
    )
    assert [s.HasField("current_limit") for s in response.statuses] == [False, True, False]
    (key,) = await redis.keys(f"rl:{domain}:*")
    # The IPv6 address is escaped, so ':' only ever separates the parts of a key.
    assert key.startswith(f"rl:{domain}:remote_address=%3A%3A1:")
    assert 0 < await redis.ttl(key) <= 2


async def test_keys_stay_apart_when_values_contain_the_separators(
    channel: grpc.aio.Channel, domain: str
) -> None:
    # Unescaped, both would be counted under `rl:<domain>:user=a:user=b:<window>`.
    await _check(channel, _request(f"{domain}:user=a", {"user": "b"}, hits=3))
    other = await _check(channel, _request(domain, {"user": "a:user=b"}))
    assert (other.overall_code, other.statuses[0].limit_remaining) == (OK, 2)


async def test_headers_describe_the_most_constrained_descriptor(
    channel: grpc.aio.Channel, domain: str
) -> None:
    both = ({"user": "dave"}, {"generic_key": "login", "remote_address": "10.0.0.9"})
    ok = await _check(channel, _request(domain, *both))
    assert [s.limit_remaining for s in ok.statuses] == [2, 1]
    assert _headers(ok)["ratelimit-policy"] == '"generic_key-login-remote_address";q=2;w=3600'
    await _check(channel, _request(domain, *both))
    over = await _check(channel, _request(domain, *both))
    # The user has no hits left but is not over; the login limit is what refused it.
    assert [s.code for s in over.statuses] == [OK, OVER_LIMIT]
    assert over.overall_code == OVER_LIMIT
    assert _headers(over)["ratelimit"].startswith('"generic_key-login-remote_address";r=0;')


async def test_a_new_window_resets_the_count(channel: grpc.aio.Channel, domain: str) -> None:
    request = _request(domain, {"remote_address": "192.0.2.1"})
    await _start_of_a_second()
    codes = [(await _check(channel, request)).overall_code for _ in range(3)]
    assert codes == [OK, OK, OVER_LIMIT]
    await _start_of_a_second()
    again = await _check(channel, request)
    assert (again.overall_code, again.statuses[0].limit_remaining) == (OK, 1)


async def test_when_redis_is_down_the_call_fails_unavailable(domain: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with _serve(f"redis://127.0.0.1:{closed_port}/0") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await _check(channel, _request(domain, {"user": "alice"}))
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        # Nothing to count, so nothing asks Redis and the answer is still OK.
        unlimited = await _check(channel, _request(domain, {"tenant": "t-1"}))
        assert unlimited.overall_code == OK
