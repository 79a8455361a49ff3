"""The one resilient HTTP client for every upstream call in the platform.

Each call gets an overall deadline (the policy's, cut short by the caller's
gRPC deadline from services.kit.context) and a timeout per attempt. Failures
that may be transient (transport errors, attempt timeouts, 502/503/504, 429)
are retried only when the call is idempotent, or when the request never left
(connection refused), after a full-jitter exponential backoff that must fit
in what is left of the deadline, and only while the upstream's retry budget
has tokens. A circuit breaker per upstream turns a dead upstream into an
immediate CircuitOpen. Every attempt is a client span carrying W3C trace
context and the request id; retries and give-ups are logged.

Answers below 500 (other than 429) go back to the caller, which knows what an
upstream's 404 or 412 means, as a `Response` read whole within the attempt's
timeout; the rest become Unavailable (503) or DeadlineExceeded (504).

The transport is aiohttp: one session per upstream, opened on the first call
(on the loop that makes it), keeping up to `max_connections` connections alive.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from opentelemetry import propagate, trace

from services.kit import context, errors, metrics
from services.kit.backoff import full_jitter
from services.kit.breaker import CircuitBreaker, Permit
from services.kit.config import env_float, env_int

log = logging.getLogger("shop.upstream")
tracer = trace.get_tracer("shop.upstream")

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Time kept back from the caller's deadline to send our own error in time.
DEADLINE_MARGIN_S = 0.05


@dataclass(frozen=True)
class UpstreamPolicy:
    """Timeouts, retries, budget and breaker settings of one upstream."""

    attempt_timeout_s: float = 1.0
    deadline_s: float = 3.0
    max_attempts: int = 3
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 1.0
    budget_ratio: float = 0.2
    budget_burst: float = 10.0
    failure_threshold: int = 5
    reset_timeout_s: float = 5.0
    max_connections: int = 100

    @classmethod
    def from_env(cls, prefix: str, env: Mapping[str, str]) -> UpstreamPolicy:
        """Read `<PREFIX>_ATTEMPT_TIMEOUT_S`, `_DEADLINE_S`, `_MAX_ATTEMPTS`, ... over the defaults."""
        d = cls()
        return cls(
            attempt_timeout_s=env_float(env, f"{prefix}_ATTEMPT_TIMEOUT_S", d.attempt_timeout_s),
            deadline_s=env_float(env, f"{prefix}_DEADLINE_S", d.deadline_s),
            max_attempts=env_int(env, f"{prefix}_MAX_ATTEMPTS", d.max_attempts),
            backoff_base_s=env_float(env, f"{prefix}_BACKOFF_BASE_S", d.backoff_base_s),
            backoff_cap_s=env_float(env, f"{prefix}_BACKOFF_CAP_S", d.backoff_cap_s),
            budget_ratio=env_float(env, f"{prefix}_RETRY_BUDGET_RATIO", d.budget_ratio),
            budget_burst=env_float(env, f"{prefix}_RETRY_BUDGET_BURST", d.budget_burst),
            failure_threshold=env_int(env, f"{prefix}_BREAKER_FAILURES", d.failure_threshold),
            reset_timeout_s=env_float(env, f"{prefix}_BREAKER_RESET_S", d.reset_timeout_s),
            max_connections=env_int(env, f"{prefix}_MAX_CONNECTIONS", d.max_connections),
        )


@dataclass(frozen=True)
class Response:
    """An upstream's answer, read whole: its status, headers (case-insensitive) and body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return jsonlib.loads(self.content)


def _json_body(value: Any) -> bytes:
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _transport_reason(exc: aiohttp.ClientError) -> str:
    """What went wrong on the wire, in words that do not name the HTTP library (they
    reach the caller in the error's message)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "no connection"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "malformed answer"
    return "connection lost"


class RetryBudget:
    """Retries may be at most `ratio` of calls, after an initial `burst`.

    Each call deposits `ratio` tokens (up to `burst`), each retry takes one, so
    a failing upstream sees at most (1 + ratio) times its normal load instead
    of `max_attempts` times. Tokens are counted in thousandths so that ten
    deposits of 0.1 make exactly one.
    """

    def __init__(self, ratio: float, burst: float) -> None:
        self._ratio, self._burst = round(ratio * 1000), round(burst * 1000)
        self._tokens = self._burst
        self._lock = threading.Lock()

    def deposit(self) -> None:
        with self._lock:
            self._tokens = min(self._burst, self._tokens + self._ratio)

    def withdraw(self) -> bool:
        """Take one token for a retry; False when the budget is spent."""
        with self._lock:
            if self._tokens < 1000:
                return False
            self._tokens -= 1000
            return True


class _Failure(Exception):
    """One failed attempt: why, and whether a retry could help."""

    def __init__(
        self, reason: str, *, timed_out: bool = False, sent: bool = True, transient: bool = True
    ) -> None:
        super().__init__(reason)
        self.reason, self.timed_out, self.sent, self.transient = reason, timed_out, sent, transient

    def retryable(self, idempotent: bool) -> bool:
        """Worth another attempt: transient, and either idempotent or never delivered."""
        return self.transient and (idempotent or not self.sent)


@dataclass
class Counters:
    calls: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0
    budget_exhausted: int = 0


class Upstream:
    """Calls one upstream HTTP service with deadline, retries, budget and breaker."""

    def __init__(
        self,
        name: str,
        base_url: str,
        policy: UpstreamPolicy,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.policy = policy
        self.breaker = CircuitBreaker(
            name,
            failure_threshold=policy.failure_threshold,
            reset_timeout=policy.reset_timeout_s,
        )
        self.budget = RetryBudget(policy.budget_ratio, policy.budget_burst)
        self.counters = Counters()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        """The upstream's session, opened on the first call. No proxies from the
        environment and no redirects (see `_attempt`): the platform talks to the
        configured address and nowhere else (SSRF hardening)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.policy.max_connections),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),  # each attempt has its own
                headers={"User-Agent": "shop-upstream"},
            )
            # aiohttp resends an idempotent request once when its connection drops, out
            # of sight of the retry budget, the breaker and the attempt's span: the
            # policy above is the one place a request is retried.
            self._session._retry_connection = False
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 for the first)."""
        return full_jitter(
            self._rng, retry, base_s=self.policy.backoff_base_s, cap_s=self.policy.backoff_cap_s
        )

    def _deadline(self) -> float:
        own = time.monotonic() + self.policy.deadline_s
        caller = context.deadline.get()
        return own if caller is None else min(own, caller - DEADLINE_MARGIN_S)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, str]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> Response:
        """Send one logical request; retried only if `idempotent` (default: by method)."""
        started, outcome = time.perf_counter(), "failed"
        try:
            response = await self._send(method, path, params, json, headers, idempotent)
            outcome = "ok"
            return response
        except errors.CircuitOpen:
            outcome = "rejected"
            raise
        finally:
            metrics.UPSTREAM_CALLS.labels(self.name, outcome).inc()
            metrics.UPSTREAM_DURATION.labels(self.name).observe(time.perf_counter() - started)

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | list[tuple[str, str]] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        idempotent: bool | None,
    ) -> Response:
        method = method.upper()
        retry_allowed = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        deadline = self._deadline()
        self.counters.calls += 1
        self.budget.deposit()
        request_id = context.request_id.get()
        sent_headers = {**({"x-request-id": request_id} if request_id else {}), **(headers or {})}
        last: _Failure | None = None
        for attempt in range(self.policy.max_attempts):
            if attempt:
                if last is None or not last.retryable(retry_allowed):
                    break
                delay = self.backoff(attempt - 1)
                if time.monotonic() + delay >= deadline:
                    break
                if not self.budget.withdraw():
                    self.counters.budget_exhausted += 1
                    metrics.UPSTREAM_BUDGET_REFUSALS.labels(self.name).inc()
                    log.warning("retry budget exhausted", extra={"upstream": self.name})
                    break
                log.info(
                    "upstream retry",
                    extra={
                        "upstream": self.name,
                        "attempt": attempt + 1,
                        "reason": last.reason if last else "",
                        "delay_ms": round(delay * 1000, 1),
                    },
                )
                self.counters.retries += 1
                metrics.UPSTREAM_RETRIES.labels(self.name).inc()
                await self._sleep(delay)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            permit = self.breaker.admit()
            try:
                return await self._attempt(
                    permit, method, path, params, json, sent_headers, attempt, remaining
                )
            except _Failure as failure:
                last = failure
        self.counters.failures += 1
        raise self._give_up(method, path, last)

    async def _attempt(
        self,
        permit: Permit,
        method: str,
        path: str,
        params: Any,
        body: Any,
        headers: dict[str, str],
        attempt: int,
        remaining: float,
    ) -> Response:
        timeout = min(self.policy.attempt_timeout_s, remaining)
        self.counters.attempts += 1
        metrics.UPSTREAM_ATTEMPTS.labels(self.name).inc()
        with tracer.start_as_current_span(
            f"{method} {self.name}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "server.address": self.name,
                "url.path": path,
                "http.request.resend_count": attempt,
            },
        ) as span:
            carrier = dict(headers)
            propagate.inject(carrier)
            data = None
            if body is not None:
                data = _json_body(body)
                carrier.setdefault("Content-Type", "application/json")
            reported = False
            try:
                async with (
                    asyncio.timeout(timeout),
                    self._http().request(
                        method,
                        self._base_url + path,
                        params=params,
                        data=data,
                        headers=carrier,
                        allow_redirects=False,
                    ) as answer,
                ):
                    response = Response(answer.status, answer.headers, await answer.read())
                span.set_attribute("http.response.status_code", response.status_code)
                status = response.status_code
                if status in RETRYABLE_STATUS or status >= 500:
                    if status != 429:  # a throttle is not an outage
                        self.breaker.failure(permit)
                        reported = True
                    # Other 5xx (500, 501, ...) are the upstream's bugs: a retry repeats them.
                    raise _Failure(f"HTTP {status}", transient=status in RETRYABLE_STATUS)
                self.breaker.success(permit)
                reported = True
                return response
            except TimeoutError as exc:
                self.breaker.failure(permit)
                reported = True
                span.set_status(trace.StatusCode.ERROR, "timeout")
                raise _Failure(f"no answer within {timeout:.3f}s", timed_out=True) from exc
            except aiohttp.ClientError as exc:
                self.breaker.failure(permit)
                reported = True
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                # A refused connection never delivered the request: safe to resend.
                refused = isinstance(exc, aiohttp.ClientConnectorError)
                raise _Failure(_transport_reason(exc), sent=not refused) from exc
            finally:
                if not reported:
                    self.breaker.abandon(permit)

    def _give_up(self, method: str, path: str, last: _Failure | None) -> errors.PlatformError:
        log.warning(
            "upstream call failed",
            extra={"upstream": self.name, "method": method, "path": path,
                   "reason": last.reason if last else "deadline spent"},
        )  # fmt: skip
        if last is None or last.timed_out:
            return errors.DeadlineExceeded(
                f"{self.name} did not answer in time", metadata={"upstream": self.name}
            )
        return errors.Unavailable(
            f"{self.name} is unavailable ({last.reason})", metadata={"upstream": self.name}
        )
