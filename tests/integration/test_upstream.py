"""The resilient upstream client against the real ERP stub: retries, deadlines, budget, breaker."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import pytest

from services.kit import context, errors
from services.kit.breaker import CircuitBreaker, State
from services.kit.upstream import Response, Upstream, UpstreamPolicy
from services.launcher import procs
from tests.upstream_admin import StubAdmin, running_stub

DEMO = {"X-Tenant-Id": "demo"}
LIST = "GET /products"
NEW_PRODUCT = {"sku": "UPSTREAM-1", "name": "Upstream test", "price_cents": 100}
# How late a call may end after its deadline: scheduling, not design.
MARGIN_S = 0.15
# How late one attempt may be cut after its own timeout on a loaded machine (an attempt
# that was not cut would run for the stub's whole latency, seconds).
SCHEDULING_S = 0.1
# Failing fast: typically well under 10 ms, and none but the slowest near the stub's
# 200 ms latency. A breaker that waited would make every call slow; one call held up
# by the host (a stall of the whole process, seen on a loaded shared machine) is the
# scheduler, so the slowest call only has to stay under the attempt timeout.
FAST_TYPICAL_S, FAST_WORST_S, FAST_SLOWEST_S = 0.01, 0.05, 0.9
FAST = UpstreamPolicy(
    attempt_timeout_s=0.2,
    deadline_s=1.0,
    max_attempts=3,
    backoff_base_s=0.02,
    backoff_cap_s=0.1,
    # Budget and breaker out of the way unless a test is about them.
    budget_burst=1000,
    failure_threshold=1000,
    reset_timeout_s=0.3,
)


class Connect(Protocol):
    def __call__(
        self,
        *,
        url: str | None = None,
        rng: random.Random | None = None,
        sleep: Sleeps | None = None,
        **policy: Any,
    ) -> Upstream: ...


class Sleeps:
    """The backoff sleeps of an Upstream: when each started, how long, when it ended."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.delays: list[float] = []
        self.ended: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.started.append(time.monotonic())
        self.delays.append(delay)
        await asyncio.sleep(delay)
        self.ended.append(time.monotonic())


class Scripted(random.Random):
    """An rng whose draws the test writes down, one per backoff."""

    def __init__(self, *draws: float) -> None:
        super().__init__()
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)


@pytest.fixture(scope="module")
def erp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_stub("erp", tmp_path_factory.mktemp("upstream")) as url:
        yield url


@pytest.fixture(scope="module")
def stub(erp_url: str) -> StubAdmin:
    return StubAdmin(erp_url)


@pytest.fixture(autouse=True)
def clean_stub(stub: StubAdmin) -> Iterator[None]:
    """Every test starts with no faults and zero counts, and leaves no faults."""
    stub.clear()
    stub.reset_stats()
    yield
    stub.clear()


@pytest.fixture
async def connect(erp_url: str) -> AsyncIterator[Connect]:
    """Builds Upstreams on FAST timings with policy overrides; closes them after the test."""
    made: list[Upstream] = []

    def build(
        *,
        url: str | None = None,
        rng: random.Random | None = None,
        sleep: Sleeps | None = None,
        **policy: Any,
    ) -> Upstream:
        up = Upstream(
            "erp",
            url or erp_url,
            dataclasses.replace(FAST, **policy),
            rng=rng or random.Random(42),
            sleep=sleep or asyncio.sleep,
        )
        made.append(up)
        return up

    yield build
    for up in made:
        await up.aclose()


def state(breaker: CircuitBreaker) -> State:
    """The breaker's state now (a call, so type checkers do not narrow it between reads)."""
    return breaker.state


async def call(up: Upstream, method: str = "GET", idempotent: bool | None = None) -> Response:
    if method == "GET":
        return await up.request("GET", "/products", params={"limit": "2"}, headers=DEMO)
    return await up.request(
        method, "/products", json=NEW_PRODUCT, headers=DEMO, idempotent=idempotent
    )


async def timed(
    action: Callable[[], Awaitable[Response]],
) -> tuple[float, Response | errors.PlatformError]:
    """How long an upstream call took, and its answer or error."""
    start = time.monotonic()
    try:
        outcome: Response | errors.PlatformError = await action()
    except errors.PlatformError as exc:
        outcome = exc
    return time.monotonic() - start, outcome


def assert_fast(durations: list[float]) -> None:
    ordered = sorted(durations)
    assert statistics.median(ordered) < FAST_TYPICAL_S, durations
    assert ordered[-2] < FAST_WORST_S, durations
    assert ordered[-1] < FAST_SLOWEST_S, durations


# --- answers -----------------------------------------------------------------------------


async def test_a_healthy_get_returns_the_answer_after_one_attempt(
    connect: Connect, stub: StubAdmin
) -> None:
    up = connect()

    response = await call(up)

    assert response.status_code == 200
    assert len(response.json()["items"]) == 2
    assert stub.requests(LIST) == 1
    assert (up.counters.attempts, up.counters.retries) == (1, 0)


async def test_a_404_is_returned_not_raised_nor_retried(connect: Connect, stub: StubAdmin) -> None:
    up = connect(failure_threshold=1)

    response = await up.request("GET", "/products/no-such-product", headers=DEMO)

    assert response.status_code == 404
    assert stub.requests("GET /products/{id}") == 1
    assert state(up.breaker) is State.CLOSED  # the upstream answered: it is healthy


# --- which failures are retried ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "idempotent", "attempts"),
    [("GET", None, 3), ("POST", False, 1), ("POST", True, 3)],
    ids=["get", "post", "idempotent-post"],
)
async def test_a_503_is_retried_only_for_idempotent_calls(
    connect: Connect, stub: StubAdmin, method: str, idempotent: bool | None, attempts: int
) -> None:
    up = connect()
    stub.faults(error_rate=1.0, error_status=503)

    with pytest.raises(errors.Unavailable, match="HTTP 503") as info:
        await call(up, method, idempotent)

    assert type(info.value) is errors.Unavailable
    assert stub.requests(f"{method} /products") == attempts
    assert up.counters.retries == attempts - 1


async def test_a_500_is_not_retried_but_is_unavailable(connect: Connect, stub: StubAdmin) -> None:
    up = connect()
    stub.faults(error_rate=1.0, error_status=500)

    with pytest.raises(errors.Unavailable, match="HTTP 500"):
        await call(up)

    assert stub.requests(LIST) == 1


async def test_a_429_is_retried_but_does_not_open_the_breaker(
    connect: Connect, stub: StubAdmin
) -> None:
    up = connect(failure_threshold=1)
    stub.faults(error_rate=1.0, error_status=429)

    with pytest.raises(errors.Unavailable, match="HTTP 429"):
        await call(up)

    assert stub.requests(LIST) == 3
    assert state(up.breaker) is State.CLOSED


@pytest.mark.parametrize(
    ("method", "idempotent", "attempts"),
    [("GET", None, 3), ("POST", False, 1), ("POST", True, 3)],
    ids=["get", "post", "idempotent-post"],
)
async def test_a_connection_aborted_mid_request_is_retried_only_when_idempotent(
    connect: Connect, stub: StubAdmin, method: str, idempotent: bool | None, attempts: int
) -> None:
    up = connect()
    stub.faults(down=True)

    with pytest.raises(errors.Unavailable, match=r"\(connection lost\)"):
        await call(up, method, idempotent)

    assert stub.requests(f"{method} /products") == attempts


async def test_a_refused_connection_is_retried_even_for_a_non_idempotent_post(
    connect: Connect,
) -> None:
    up = connect(url=f"http://127.0.0.1:{procs.free_port()}")

    with pytest.raises(errors.Unavailable, match=r"\(no connection\)"):
        await call(up, "POST", idempotent=False)

    # Never delivered, so resending cannot create the product twice.
    assert (up.counters.attempts, up.counters.retries) == (3, 2)


async def test_calls_to_a_half_failing_erp_succeed_through_retries_within_the_deadline(
    connect: Connect, stub: StubAdmin
) -> None:
    up = connect(max_attempts=5)
    stub.faults(error_rate=0.5, seed=11)

    results = [await timed(lambda: call(up)) for _ in range(10)]

    assert [getattr(r, "status_code", r) for _, r in results] == [200] * 10
    assert up.counters.retries > 0
    assert stub.requests(LIST) == up.counters.attempts == 10 + up.counters.retries
    assert max(elapsed for elapsed, _ in results) <= FAST.deadline_s + MARGIN_S


# --- deadlines ---------------------------------------------------------------------------


async def test_a_slow_erp_is_cut_at_each_attempt_timeout_and_at_the_deadline(
    connect: Connect, stub: StubAdmin
) -> None:
    sleeps = Sleeps()
    up = connect(attempt_timeout_s=0.3, max_attempts=10, backoff_cap_s=0.05, sleep=sleeps)
    timeout_s = up.policy.attempt_timeout_s
    stub.faults(latency_ms=2000)

    start = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):
        await call(up)
    end = time.monotonic()

    assert end - start <= FAST.deadline_s + MARGIN_S
    # An attempt runs from the end of one backoff sleep to the start of the next.
    attempts = list(zip([start, *sleeps.ended], [*sleeps.started, end], strict=True))
    for began, gave_up in attempts[:-1]:
        assert timeout_s - 0.01 <= gave_up - began <= timeout_s + SCHEDULING_S
    # The last attempt gets only what is left of the deadline.
    last_began, last_gave_up = attempts[-1]
    assert last_gave_up - last_began <= start + FAST.deadline_s - last_began + SCHEDULING_S
    # Three 0.3 s attempts and their short backoffs leave the 1 s deadline room for a fourth.
    assert 3 <= up.counters.attempts == len(attempts) <= math.ceil(FAST.deadline_s / timeout_s)
    assert stub.requests(LIST) <= up.counters.attempts


async def test_the_callers_deadline_cuts_a_call_shorter_than_the_policy(
    connect: Connect, stub: StubAdmin
) -> None:
    up = connect(attempt_timeout_s=5.0, deadline_s=5.0)
    stub.faults(latency_ms=2000)

    with context.budget(0.3):
        elapsed, outcome = await timed(lambda: call(up))

    assert isinstance(outcome, errors.DeadlineExceeded)
    assert 0.2 <= elapsed <= 0.3 + MARGIN_S


async def test_a_caller_out_of_time_sends_nothing(connect: Connect, stub: StubAdmin) -> None:
    up = connect()

    with context.budget(0.0), pytest.raises(errors.DeadlineExceeded):
        await call(up)

    assert stub.requests(LIST) == 0


@pytest.mark.parametrize("seed", range(5))
async def test_jittered_retries_never_sleep_past_the_deadline(
    connect: Connect, stub: StubAdmin, seed: int
) -> None:
    sleeps = Sleeps()
    up = connect(
        max_attempts=50,
        backoff_base_s=0.1,
        backoff_cap_s=5.0,
        rng=random.Random(seed),
        sleep=sleeps,
    )
    stub.faults(error_rate=1.0)

    start = time.monotonic()
    with pytest.raises(errors.Unavailable):
        await call(up)
    elapsed = time.monotonic() - start

    assert elapsed <= FAST.deadline_s + MARGIN_S
    assert sleeps.delays, "the first failure was retried"
    for began, delay in zip(sleeps.started, sleeps.delays, strict=True):
        assert began + delay < start + FAST.deadline_s


# --- retry budget ------------------------------------------------------------------------


async def test_once_the_retry_budget_is_spent_failing_calls_make_one_attempt(
    connect: Connect, stub: StubAdmin
) -> None:
    up = connect(budget_burst=2, budget_ratio=0.0)
    stub.faults(error_rate=1.0)

    per_call: list[int] = []
    for _ in range(4):
        before = stub.requests(LIST)
        with pytest.raises(errors.Unavailable):
            await call(up)
        per_call.append(stub.requests(LIST) - before)

    assert per_call == [3, 1, 1, 1]
    assert up.counters.budget_exhausted == 3


async def test_a_retry_that_does_not_fit_the_deadline_spends_no_budget(
    connect: Connect, stub: StubAdmin
) -> None:
    # Retry 0 draws 0.9 of a 5 s backoff (past the 1 s deadline), the next call's draws 0.
    up = connect(
        budget_burst=1,
        budget_ratio=0.0,
        max_attempts=2,
        backoff_base_s=5.0,
        backoff_cap_s=5.0,
        rng=Scripted(0.9, 0.0),
    )
    stub.faults(error_rate=1.0)
    with pytest.raises(errors.Unavailable):
        await call(up)
    assert (stub.requests(LIST), up.counters.retries) == (1, 0)

    with pytest.raises(errors.Unavailable):
        await call(up)

    assert stub.requests(LIST) == 3  # the second call got the retry the first did not make


# --- circuit breaker ---------------------------------------------------------------------


async def test_an_open_breaker_fails_fast_then_lets_exactly_one_probe_through(
    connect: Connect, stub: StubAdmin
) -> None:
    up = connect(failure_threshold=3, reset_timeout_s=0.3, attempt_timeout_s=1.0, deadline_s=2.0)
    stub.faults(error_rate=1.0)
    with pytest.raises(errors.Unavailable, match="HTTP 503"):
        await call(up)
    assert state(up.breaker) is State.OPEN
    reached = stub.requests(LIST)
    assert reached == 3

    refused = [await timed(lambda: call(up)) for _ in range(10)]

    assert all(isinstance(outcome, errors.CircuitOpen) for _, outcome in refused)
    assert_fast([elapsed for elapsed, _ in refused])
    assert stub.requests(LIST) == reached  # the open breaker sends nothing

    # Recovered but slow, so the probe is still in flight when the other 19 arrive.
    stub.faults(latency_ms=200)
    await asyncio.sleep(0.35)
    results = await asyncio.gather(*(timed(lambda: call(up)) for _ in range(20)))

    answered = [(elapsed, r) for elapsed, r in results if isinstance(r, Response)]
    failed_fast = [(elapsed, r) for elapsed, r in results if isinstance(r, errors.CircuitOpen)]
    assert len(answered) == 1
    assert answered[0][1].status_code == 200
    assert answered[0][0] >= 0.2
    assert len(failed_fast) == 19
    assert_fast([elapsed for elapsed, _ in failed_fast])
    assert stub.requests(LIST) == reached + 1

    assert state(up.breaker) is State.CLOSED
    stub.clear()
    for _ in range(3):
        assert (await call(up)).status_code == 200
    assert stub.requests(LIST) == reached + 4
