"""A circuit breaker per upstream, whose half-open state admits exactly one probe.

    closed     calls pass; `failure_threshold` consecutive failures open it.
    open       calls fail fast with CircuitOpen for `reset_timeout` seconds.
    half_open  ONE caller, the probe, goes through; every other caller fails
               fast until the probe reports: success closes the breaker,
               failure opens it for another `reset_timeout`. A probe that never
               reports (its caller was cancelled) frees the slot for the next.

aiobreaker, which the design names, lets every concurrent call through while
half-open (a thundering herd on an upstream that is just recovering), and its
last release predates Python 3.12; this is the small part of it the platform
needs. A lock guards the transitions (never held across an await), so one
breaker may be shared by tasks and threads. Its state, transitions and
rejections are exported as `shop_breaker_*` (services.kit.metrics).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from services.kit import errors, metrics

log = logging.getLogger("shop.breaker")


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; a probe's outcome decides the half-open breaker."""

    probe: bool


class CircuitBreaker:
    """Counts consecutive failures of one upstream and fails fast while it is down."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.rejected = 0
        self._show(State.CLOSED)

    @property
    def state(self) -> State:
        with self._lock:
            if self._state is State.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
                return State.HALF_OPEN
            return self._state

    def admit(self) -> Permit:
        """A permit to call the upstream, or CircuitOpen (fail fast)."""
        with self._lock:
            if self._state is State.CLOSED:
                return Permit(probe=False)
            waited = self._clock() - self._opened_at
            if self._state is State.OPEN and waited >= self.reset_timeout:
                self._transition(State.HALF_OPEN)
            if self._state is State.HALF_OPEN and not self._probing:
                self._probing = True
                return Permit(probe=True)
            self.rejected += 1
            metrics.BREAKER_REJECTIONS.labels(self.name).inc()
            retry_after = max(self.reset_timeout - waited, 0.0)
        raise errors.CircuitOpen(
            f"{self.name} is unavailable (circuit open); retry in {retry_after:.1f}s",
            metadata={
                "upstream": self.name,
                "retry_after_s": f"{retry_after:.1f}",
                # Whole seconds, never 0 (RFC 9110): the edge sends it as Retry-After.
                errors.RETRY_AFTER: str(max(1, math.ceil(retry_after))),
            },
        )

    def success(self, permit: Permit) -> None:
        """The call worked: reset the count; a probe closes the breaker."""
        with self._lock:
            self._failures = 0
            if permit.probe:
                self._probing = False
                self._transition(State.CLOSED)

    def failure(self, permit: Permit) -> None:
        """The call failed: a probe, or the threshold-th failure in a row, opens the breaker."""
        with self._lock:
            self._failures += 1
            if permit.probe:
                self._probing = False
                self._open()
            elif self._state is State.CLOSED and self._failures >= self.failure_threshold:
                self._open()

    def abandon(self, permit: Permit) -> None:
        """The call ended without telling anything about the upstream (cancelled)."""
        if permit.probe:
            with self._lock:
                self._probing = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition(State.OPEN)

    def _transition(self, to: State) -> None:
        if to is not self._state:
            log.warning(
                "circuit breaker state change",
                extra={"upstream": self.name, "from": self._state.value, "to": to.value},
            )
            metrics.BREAKER_TRANSITIONS.labels(self.name, to.value).inc()
            self._show(to)
        self._state = to

    def _show(self, current: State) -> None:
        for state in State:
            metrics.BREAKER_STATE.labels(self.name, state.value).set(int(state is current))
