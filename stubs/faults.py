"""Fault injection for the stubs: make them slow, failing, hanging or down at run time.

A `FaultInjector` holds a stub's current `FaultConfig`, the random stream drawn
from it and the request counters. Its middleware wraps every business route;
its admin routes are never faulted and never counted:

    GET    /_admin/health   200 {"status": "serving"}
    GET    /_admin/faults   the current config
    PUT    /_admin/faults   replace it (fields left out take their defaults, unknown ones are 400)
    DELETE /_admin/faults   back to no faults
    GET    /_admin/stats    {"requests": n, "by_route": {"GET /products/{id}": n}, "faults": {...}}
    DELETE /_admin/stats    counters back to zero

An affected request (path under `path_prefix`, tenant equal to `tenant`, when
set) is aborted without a response when `down`; otherwise it waits
`latency_ms + uniform(0, jitter_ms)`, then answers `error_status` with
probability `error_rate`, or hangs `hang_s` and answers 504 with probability
`timeout_rate`. With `phase: "after"` the error and the hang come after the
stub has handled the request: its change is made, but the client sees a 5xx or
gives up waiting (a lost or late answer, which an idempotent retry or a
reconciler must resolve). Setting a config starts `random.Random(seed)`, and
every affected request draws from it in arrival order, so one seed and one
request sequence always give the same faults.

Declines are a refusal only a stub that takes payments makes: an affected charge
(of `decline_amount_cents`, when set) is declined with probability
`decline_rate`, answered by the stub itself as a refused charge with
`decline_code` (see `stubs.payments`; `FaultInjector.decline_code`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from stubs import TENANT_HEADER, Handler, bad_request, error_response, parse_object, upstream_errors

ADMIN_PREFIX = "/_admin/"
FAULT_KINDS = ("latency", "error", "timeout", "down")
PHASES = ("before", "after")
_DECLINE_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Where the middleware leaves a request's decline draw for the handler.
_DECLINE_DRAW = "decline_draw"


def _number(config: dict[str, Any], name: str, high: float) -> float:
    value = config[name]
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= high:
        raise bad_request(f"{name} must be a number in 0..{high}")
    return float(value)


def _optional_str(config: dict[str, Any], name: str) -> str | None:
    value = config[name]
    if value is not None and (not isinstance(value, str) or not value):
        raise bad_request(f"{name} must be a non-empty string or null")
    return value


@dataclass(frozen=True)
class FaultConfig:
    """What to do to affected requests; the defaults do nothing.

    Parsed from the JSON of `PUT /_admin/faults` or `STUB_FAULTS` by `from_json`,
    which rejects unknown fields and out-of-range values with a 400 UpstreamError.
    """

    latency_ms: float = 0
    jitter_ms: float = 0
    error_rate: float = 0.0
    error_status: int = 503
    timeout_rate: float = 0.0
    hang_s: float = 30.0
    down: bool = False
    seed: int | None = None
    path_prefix: str | None = None
    tenant: str | None = None
    phase: str = "before"
    decline_rate: float = 0.0
    decline_code: str = "card_declined"
    decline_amount_cents: int | None = None

    @classmethod
    def from_json(cls, value: object) -> FaultConfig:
        """A validated config from decoded JSON; fields left out take their defaults."""
        if not isinstance(value, dict):
            raise bad_request("the fault config must be a JSON object")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise bad_request(f"unknown fields: {', '.join(unknown)}")
        config = {**dataclasses.asdict(cls()), **value}
        for name, high in (("latency_ms", 600_000), ("jitter_ms", 600_000), ("hang_s", 3600)):
            _number(config, name, high)
        error_rate = _number(config, "error_rate", 1)
        timeout_rate = _number(config, "timeout_rate", 1)
        if error_rate + timeout_rate > 1:
            raise bad_request("error_rate + timeout_rate must not exceed 1")
        status = config["error_status"]
        if type(status) is not int or not (status == 429 or 500 <= status <= 599):
            raise bad_request("error_status must be 429 or 500..599")
        if type(config["down"]) is not bool:
            raise bad_request("down must be true or false")
        if config["seed"] is not None and type(config["seed"]) is not int:
            raise bad_request("seed must be an integer or null")
        prefix = _optional_str(config, "path_prefix")
        if prefix is not None and not prefix.startswith("/"):
            raise bad_request("path_prefix must start with /")
        _optional_str(config, "tenant")
        if config["phase"] not in PHASES:
            raise bad_request(f"phase must be one of {', '.join(PHASES)}")
        _number(config, "decline_rate", 1)
        code = config["decline_code"]
        if not isinstance(code, str) or not _DECLINE_CODE.fullmatch(code):
            raise bad_request(f"decline_code must match {_DECLINE_CODE.pattern}")
        amount = config["decline_amount_cents"]
        if amount is not None and (type(amount) is not int or amount < 1):
            raise bad_request("decline_amount_cents must be a positive integer or null")
        return cls(**config)

    @classmethod
    def from_text(cls, text: str) -> FaultConfig:
        """A validated config from JSON text (the `STUB_FAULTS` variable)."""
        return cls.from_json(parse_object(text.encode()))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def affects(self, path: str, tenant: str | None) -> bool:
        """Whether a business request with this path and tenant header gets the faults."""
        return (self.path_prefix is None or path.startswith(self.path_prefix)) and (
            self.tenant is None or tenant == self.tenant
        )


class FaultInjector:
    """A stub's fault config, its random stream and its request counters."""

    def __init__(self, config: FaultConfig) -> None:
        self.configure(config)
        self.reset_stats()

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig) -> None:
        # Config and stream change together, so a request never draws from another config's seed.
        self._config, self._rng = config, random.Random(config.seed)

    def reset_stats(self) -> None:
        self.requests = 0
        self.by_route: Counter[str] = Counter()
        self.faults: Counter[str] = Counter(dict.fromkeys(FAULT_KINDS, 0))

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_route": dict(self.by_route),
            "faults": dict(self.faults),
        }

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count a business request at arrival, then apply the faults that affect it."""
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        self.requests += 1
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "(no route)"
        self.by_route[f"{request.method} {route}"] += 1
        config, rng = self._config, self._rng
        if not config.affects(request.path, request.headers.get(TENANT_HEADER)):
            return await handler(request)
        if config.down:
            return self._abort(request)
        # Drawn before the first await, so concurrent requests take the stream in arrival order.
        delay_s = (config.latency_ms + rng.uniform(0, config.jitter_ms)) / 1000
        roll = rng.random()
        # Drawn only when asked for, so configs without declines keep their streams.
        if config.decline_rate > 0:
            request[_DECLINE_DRAW] = (config, rng.random())
        if delay_s > 0:
            self._record(request, "latency")
            await asyncio.sleep(delay_s)
        if config.phase == "after" and roll < config.error_rate + config.timeout_rate:
            await handler(request)  # the change is made; its answer is what gets lost
        if roll < config.error_rate:
            self._record(request, "error")
            return error_response(config.error_status, "injected_fault", "injected error")
        if roll < config.error_rate + config.timeout_rate:
            self._record(request, "timeout")
            # A client that gives up cancels this wait (handler cancellation), not the change.
            await asyncio.sleep(config.hang_s)
            return error_response(504, "injected_fault", "injected timeout")
        return await handler(request)

    def decline_code(self, request: web.Request, amount_cents: int) -> str | None:
        """The code to decline this charge with, or None: the affected request's draw
        against the config it arrived under."""
        drawn = request.get(_DECLINE_DRAW)
        if drawn is None:
            return None
        config, roll = drawn
        if config.decline_amount_cents not in (None, amount_cents) or roll >= config.decline_rate:
            return None
        request["fault"] = "decline"  # for the access log; the stub's own records count them
        return str(config.decline_code)

    def _record(self, request: web.Request, kind: str) -> None:
        self.faults[kind] += 1
        request["fault"] = kind  # for the access log

    def _abort(self, request: web.Request) -> web.StreamResponse:
        # As if the process died mid-request: reset the connection, send nothing. The
        # response returned only satisfies aiohttp; writing it to the aborted transport
        # fails quietly ("premature client disconnection").
        self._record(request, "down")
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "serving"})

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._config.to_json())

    async def _put_faults(self, request: web.Request) -> web.Response:
        self.configure(FaultConfig.from_json(parse_object(await request.read())))
        return web.json_response(self._config.to_json())

    async def _delete_faults(self, request: web.Request) -> web.Response:
        self.configure(FaultConfig())
        return web.json_response(self._config.to_json())

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _delete_stats(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(self.stats())

    def admin_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_admin/health", self._health),
            web.get("/_admin/faults", self._get_faults),
            web.put("/_admin/faults", self._put_faults),
            web.delete("/_admin/faults", self._delete_faults),
            web.get("/_admin/stats", self._get_stats),
            web.delete("/_admin/stats", self._delete_stats),
        ]


def application(routes: Iterable[web.RouteDef], injector: FaultInjector) -> web.Application:
    """A stub's app: its business routes behind fault injection, plus the admin routes."""
    # Faults outermost: an injected error or abort never reaches the stub's own logic.
    app = web.Application(middlewares=[injector.middleware, upstream_errors])
    app.add_routes([*routes, *injector.admin_routes()])
    return app
