"""Fail fast with the ERP down: what the requests that open the breaker cost, and
how quickly the open breaker answers.

Every request names a tenant of its own, so no cache can answer it and each one
must reach the ERP (or the breaker). Requests are sequential on one keep-alive
connection, timed from sending to the last byte of the body.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import math
import secrets
import time
import urllib.parse
from collections.abc import Mapping, Sequence

import httpx

from bench.load import cpu_meter, nearest_rank

PATH = "/v1/products"


class BreakerDidNotOpen(RuntimeError):
    """The ERP was down, but no answer said the circuit is open."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """One response as the client saw it."""

    status: int
    code: str
    message: str
    ms: float
    at: float  # time.monotonic() when the answer was complete
    erp_requests: int | None = None  # requests the ERP stub saw meanwhile, when counted

    @property
    def circuit_open(self) -> bool:
        return self.status == 503 and "circuit open" in self.message


@dataclasses.dataclass(frozen=True)
class Distribution:
    """Latency of a set of requests in milliseconds (nearest-rank percentiles)."""

    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, answers: Sequence[Answer]) -> Distribution:
        ms = sorted(a.ms for a in answers)
        if not ms:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(ms), nearest_rank(ms, 50), nearest_rank(ms, 99), ms[-1])


class Client:
    """Sequential GETs on one keep-alive HTTP/1.1 connection (http.client: little overhead)."""

    def __init__(self, base_url: str) -> None:
        url = urllib.parse.urlsplit(base_url)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 80
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def get(self, path: str, tenant: str) -> Answer:
        headers = {"X-Tenant-Id": tenant}
        for reconnect in (False, True):
            if self._conn is None or reconnect:
                self.close()
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=30)
            started = time.perf_counter()
            try:
                self._conn.request("GET", path, headers=headers)
                response = self._conn.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if reconnect:
                    raise
                continue  # the server closed the idle connection: time a fresh one instead
            ms = (time.perf_counter() - started) * 1000
            return _answer(response.status, body, ms)
        raise AssertionError("unreachable")


def _answer(status: int, body: bytes, ms: float) -> Answer:
    code = message = ""
    if status >= 400:
        try:
            error = json.loads(body)
            code, message = str(error.get("code", "")), str(error.get("message", ""))
        except (ValueError, AttributeError):
            message = body[:200].decode(errors="replace")
    return Answer(status, code, message, ms, time.monotonic())


def fresh_tenant() -> str:
    return f"bench-{secrets.token_hex(6)}"


@dataclasses.dataclass(frozen=True)
class FailFastResult:
    """The breaker phase: the reference, the opening, the open breaker, the recovery."""

    reference: list[Answer]  # a cached page, same client, before any fault
    opening: list[Answer]  # up to and including the first circuit-open answer
    erp_requests_opening: int  # requests that reached the ERP stub while opening
    open: list[Answer]  # the measured requests after it opened
    erp_requests_open: int  # should be 0: an open breaker does not call the ERP
    seconds_open_before_clear: float
    recovered_after_s: float | None  # first 200 after the faults were cleared, from opening
    reference_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)
    open_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)


class ErpAdmin:
    """The ERP stub's fault and statistics API."""

    def __init__(self, erp_url: str) -> None:
        self._http = httpx.Client(base_url=erp_url, timeout=5, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def down(self) -> None:
        self._http.put("/_admin/faults", json={"down": True}).raise_for_status()

    def clear(self) -> None:
        self._http.delete("/_admin/faults").raise_for_status()

    def requests(self) -> int:
        return int(self._http.get("/_admin/stats").json()["requests"])


def _first_ok(client: Client, limit: int, pause_s: float) -> Answer | None:
    """Poll with fresh tenants until one is served (the breaker closed again)."""
    for _ in range(limit):
        answer = client.get(PATH, fresh_tenant())
        if answer.status == 200:
            return answer
        time.sleep(pause_s)
    return None


def measure(
    rest_url: str,
    erp_url: str,
    *,
    reference_tenant: str,
    n: int,
    pids: Mapping[str, int],
    max_opening: int = 50,
) -> FailFastResult:
    """Take the ERP down, open the breaker, time N fail-fast answers, then clear the faults."""
    client, admin = Client(rest_url), ErpAdmin(erp_url)
    try:
        with cpu_meter(pids) as reference_cpu:
            reference = [client.get(PATH, reference_tenant) for _ in range(n)]
        admin.down()
        try:
            before = seen = admin.requests()
            opening: list[Answer] = []
            while not (opening and opening[-1].circuit_open):
                if len(opening) >= max_opening:
                    last = opening[-1]
                    raise BreakerDidNotOpen(
                        f"the ERP is down but {max_opening} requests did not open the breaker "
                        f"(last answer {last.status} {last.code}: {last.message})"
                    )
                answer = client.get(PATH, fresh_tenant())
                now_seen = admin.requests()
                opening.append(dataclasses.replace(answer, erp_requests=now_seen - seen))
                seen = now_seen
            middle = seen
            with cpu_meter(pids) as open_cpu:
                open_answers = [client.get(PATH, fresh_tenant()) for _ in range(n)]
            after = admin.requests()
        finally:
            admin.clear()
        opened_at = opening[-1].at
        cleared_at = time.monotonic()
        first_ok = _first_ok(client, limit=600, pause_s=0.1)
    finally:
        client.close()
        admin.close()
    return FailFastResult(
        reference=reference,
        opening=opening,
        erp_requests_opening=middle - before,
        open=open_answers,
        erp_requests_open=after - middle,
        seconds_open_before_clear=cleared_at - opened_at,
        recovered_after_s=None if first_ok is None else first_ok.at - opened_at,
        reference_cpu_s=reference_cpu,
        open_cpu_s=open_cpu,
    )
