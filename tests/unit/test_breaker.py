"""The circuit breaker (one probe when half-open), the retry budget and the backoff, on a fake clock."""

from __future__ import annotations

import random
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from services.kit import errors
from services.kit.breaker import CircuitBreaker, Permit, State
from services.kit.upstream import RetryBudget, Upstream, UpstreamPolicy

RESET_S = 5.0


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("erp", failure_threshold=3, reset_timeout=RESET_S, clock=clock)


def state(breaker: CircuitBreaker) -> State:
    """The breaker's state now (a call, so type checkers do not narrow it between reads)."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.failure(breaker.admit())


def rejected(breaker: CircuitBreaker) -> errors.CircuitOpen:
    with pytest.raises(errors.CircuitOpen) as info:
        breaker.admit()
    return info.value


def opened(breaker: CircuitBreaker) -> CircuitBreaker:
    fail(breaker, breaker.failure_threshold)
    assert state(breaker) is State.OPEN
    return breaker


# --- closed -> open ----------------------------------------------------------------------


def test_the_breaker_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    assert state(breaker) is State.CLOSED
    assert breaker.admit() == Permit(probe=False)

    fail(breaker, 1)

    assert state(breaker) is State.OPEN
    rejected(breaker)


def test_a_success_in_between_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.success(breaker.admit())
    fail(breaker, 2)
    assert state(breaker) is State.CLOSED

    fail(breaker, 1)
    assert state(breaker) is State.OPEN


# --- open --------------------------------------------------------------------------------


def test_an_open_breaker_fails_fast_with_circuit_open_and_when_to_retry(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    opened(breaker)
    clock.advance(2.0)

    error = rejected(breaker)

    assert isinstance(error, errors.Unavailable)  # mapped to UNAVAILABLE like any outage
    assert error.metadata == {"upstream": "erp", "retry_after_s": "3.0", "retry-after": "3"}
    assert "erp" in error.message
    assert breaker.rejected == 1


def test_the_breaker_stays_open_until_the_reset_timeout_has_passed(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    opened(breaker)
    clock.advance(RESET_S - 0.001)

    assert state(breaker) is State.OPEN
    rejected(breaker)


# --- half-open: exactly one probe -----------------------------------------------------------


def test_after_the_reset_timeout_exactly_one_probe_is_admitted(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    opened(breaker)
    clock.advance(RESET_S)
    assert state(breaker) is State.HALF_OPEN

    probe = breaker.admit()
    others = [rejected(breaker) for _ in range(20)]

    assert probe == Permit(probe=True)
    assert len(others) == 20
    assert breaker.rejected == 20
    assert state(breaker) is State.HALF_OPEN


def test_threads_racing_a_half_open_breaker_get_one_probe_between_them(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    opened(breaker)
    clock.advance(RESET_S)
    start = threading.Barrier(20)
    permits: list[Permit] = []
    refusals: list[errors.CircuitOpen] = []

    def call() -> None:
        start.wait()
        try:
            permits.append(breaker.admit())
        except errors.CircuitOpen as exc:
            refusals.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert permits == [Permit(probe=True)]
    assert len(refusals) == 19


def test_a_successful_probe_closes_the_breaker(breaker: CircuitBreaker, clock: FakeClock) -> None:
    opened(breaker)
    clock.advance(RESET_S)

    breaker.success(breaker.admit())

    assert state(breaker) is State.CLOSED
    assert [breaker.admit() for _ in range(3)] == [Permit(probe=False)] * 3
    # The count starts again from zero: it takes the whole threshold to reopen.
    fail(breaker, 2)
    assert state(breaker) is State.CLOSED


def test_a_failed_probe_reopens_the_breaker_for_a_new_full_reset_timeout(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    opened(breaker)
    clock.advance(RESET_S + 7.0)  # the probe comes late; the new timeout counts from its failure

    breaker.failure(breaker.admit())

    assert state(breaker) is State.OPEN
    clock.advance(RESET_S - 1.0)
    assert rejected(breaker).metadata["retry_after_s"] == "1.0"
    clock.advance(1.0)
    assert breaker.admit() == Permit(probe=True)


def test_an_abandoned_probe_frees_the_slot_for_the_next_caller(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    opened(breaker)
    clock.advance(RESET_S)
    probe = breaker.admit()
    rejected(breaker)

    breaker.abandon(probe)

    assert breaker.admit() == Permit(probe=True)
    rejected(breaker)


def test_abandoning_an_ordinary_call_frees_no_probe_slot(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    late = breaker.admit()  # admitted while closed, still in flight when the breaker opens
    opened(breaker)
    clock.advance(RESET_S)
    breaker.admit()

    breaker.abandon(late)

    rejected(breaker)


@pytest.mark.parametrize("report", [CircuitBreaker.success, CircuitBreaker.failure])
def test_a_call_admitted_before_the_breaker_opened_does_not_decide_the_probe(
    breaker: CircuitBreaker, clock: FakeClock, report: Callable[[CircuitBreaker, Permit], None]
) -> None:
    late = breaker.admit()
    opened(breaker)
    clock.advance(RESET_S)
    breaker.admit()  # the probe, still in flight

    report(breaker, late)

    assert state(breaker) is State.HALF_OPEN
    rejected(breaker)


# --- construction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure_threshold", "reset_timeout"), [(0, 5.0), (-1, 5.0), (3, 0.0), (3, -1.0)]
)
def test_the_breaker_refuses_a_threshold_below_one_or_a_reset_timeout_not_above_zero(
    failure_threshold: int, reset_timeout: float
) -> None:
    with pytest.raises(ValueError, match="failure_threshold must be >= 1"):
        CircuitBreaker("erp", failure_threshold=failure_threshold, reset_timeout=reset_timeout)


def test_a_breaker_with_threshold_one_opens_on_the_first_failure(clock: FakeClock) -> None:
    breaker = CircuitBreaker("erp", failure_threshold=1, reset_timeout=0.001, clock=clock)
    assert state(breaker) is State.CLOSED

    fail(breaker, 1)

    assert state(breaker) is State.OPEN


# --- retry budget ------------------------------------------------------------------------


def spend(budget: RetryBudget) -> int:
    """Withdraw until refused; how many retries were allowed."""
    allowed = 0
    while budget.withdraw():
        allowed += 1
    return allowed


def retries_over(budget: RetryBudget, calls: int) -> int:
    """Calls that each deposit, then retry once if the budget allows: retries made."""
    made = 0
    for _ in range(calls):
        budget.deposit()
        made += budget.withdraw()
    return made


def test_the_budget_allows_a_burst_of_retries_then_refuses() -> None:
    budget = RetryBudget(ratio=0.0, burst=2)

    assert spend(budget) == 2
    assert retries_over(budget, 50) == 0


def test_deposits_never_raise_the_budget_above_the_burst() -> None:
    budget = RetryBudget(ratio=0.5, burst=3)
    for _ in range(100):
        budget.deposit()

    assert spend(budget) == 3


# Ratios whose float sums miss 1.0 (ten times 0.1 is 0.9999999999999999) included.
@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.25, 0.3, 0.5])
def test_after_the_burst_only_ratio_retries_per_call_are_allowed(ratio: float) -> None:
    budget = RetryBudget(ratio=ratio, burst=10)
    spend(budget)

    assert retries_over(budget, 100) == round(100 * ratio)


# --- backoff -----------------------------------------------------------------------------

POLICY = UpstreamPolicy(backoff_base_s=0.05, backoff_cap_s=1.0)


class TopOfRange(random.Random):
    """Draws (almost) the top of every range, to read the backoff's ceiling."""

    def random(self) -> float:
        return 0.999999


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream("erp", "http://127.0.0.1:9", POLICY, rng=random.Random(1234))
    yield up
    await up.aclose()


@pytest.mark.parametrize("retry", range(8))
async def test_the_backoff_is_full_jitter_below_the_capped_exponential(
    upstream: Upstream, retry: int
) -> None:
    ceiling = min(POLICY.backoff_cap_s, POLICY.backoff_base_s * 2**retry)

    delays = [upstream.backoff(retry) for _ in range(2000)]

    assert all(0 <= d < ceiling for d in delays)
    assert len(set(delays)) > 1900  # jittered, not a fixed delay
    # Full jitter spans the whole range, not just its upper half ("equal jitter").
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling


async def test_the_backoff_grows_exponentially_until_the_cap() -> None:
    up = Upstream("erp", "http://127.0.0.1:9", POLICY, rng=TopOfRange())
    try:
        ceilings = [round(up.backoff(retry), 3) for retry in range(7)]
    finally:
        await up.aclose()

    assert ceilings == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


async def test_a_seeded_rng_gives_a_reproducible_backoff_sequence() -> None:
    ups = [
        Upstream("erp", "http://127.0.0.1:9", POLICY, rng=random.Random(seed)) for seed in (7, 7, 8)
    ]
    try:
        first, again, other = ([up.backoff(retry % 6) for retry in range(30)] for up in ups)
    finally:
        for up in ups:
            await up.aclose()

    assert first == again
    assert first != other
