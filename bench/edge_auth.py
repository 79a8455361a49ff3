"""Benchmark: what the secure edge costs per request (JWT, RBAC, the route buckets and
the per-address and per-user quotas), next to Envoy's own direct response, in one run.

    PYTHONPATH=.:gen .venv/bin/python -m bench.edge_auth [--connections 32] [--duration 10] [--json]

It starts a platform of its own on free ports with the launcher's `Platform`
(LOG_LEVEL=WARNING) whose limits are far above what the run can reach, so every
check runs and none refuses: jwt_authn, RBAC, the per-route buckets and the
per-address and per-user buckets, all inside Envoy (only login and register ask
the rate-limit service, and none is measured here). Rows, all through the same
Envoy with the same wrk settings: GET /healthz (direct response, the baseline);
GET /v1/products?limit=20 anonymous (the address's bucket); the same with a
customer's Bearer token (EdDSA signature checked; the user's bucket too); GET
/v1/users/me with the token
(one primary-key read behind the full identity path). Per row: rate, latency,
non-2xx (any fails the run), the CPU per request of each process from /proc,
and Envoy's counters, which show that each check ran on every request. Needs
`wrk`. The table goes to stdout (or JSON with --json), progress to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import secrets
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from bench import load
from bench.load import LoadError, LoadResult, progress
from bench.products import HEALTH_PATH, TENANT, require_direct_response
from bench.report import RunInfo, cpu_lines, header_lines, load_lines
from services.launcher import procs

PRODUCTS = "/v1/products?limit=20"
ME = "/v1/users/me"
METERED = ("envoy", "product", "user", "ratelimit", "redis")
PLATFORM = (
    "the bench's own (launcher Platform on free ports), LOG_LEVEL=WARNING; every check\n"
    "          on, limits far above the load: 1,000,000/s per user and per address (Envoy's\n"
    f"          shared buckets), local buckets {load.HIGH_LIMITS.route_rps:,}/s per route"
)
NON_2XX = "http.edge.downstream_rq_{1,3,4,5}xx"
# Envoy counters summed over the names each pattern matches (found in a run's /stats).
COUNTERS = {
    "http.edge.downstream_rq_2xx": r"http\.edge\.downstream_rq_2xx",
    NON_2XX: r"http\.edge\.downstream_rq_[1345]xx",
    "http.edge.jwt_authn.allowed": r"http\.edge\.jwt_authn\.allowed",
    "http.edge.jwt_authn.denied": r"http\.edge\.jwt_authn\.denied",
    "http.edge.jwt_authn.jwt_cache_miss": r"http\.edge\.jwt_authn\.jwt_cache_miss",
    "http.edge.rbac.allowed": r"http\.edge\.rbac\.allowed",
    "route_*.http_local_rate_limit.ok": r"route_\w+\.http_local_rate_limit\.ok",
    "edge_remote_address.*.ok": r"edge_remote_address\.http_local_rate_limit\.ok",
    "edge_user.*.ok": r"edge_user\.http_local_rate_limit\.ok",
    "cluster.*.ratelimit.ok": r"cluster\.\w+\.ratelimit\.ok",
    "cluster.*.ratelimit.{over_limit,error}": r"cluster\.\w+\.ratelimit\.(over_limit|error)",
    "cluster.ratelimit.upstream_rq_total": r"cluster\.ratelimit\.upstream_rq_total",
}


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    short: str  # for the CPU and counter tables
    path: str
    token: bool


CASES = (
    Case("Envoy direct response GET /healthz", "/healthz", HEALTH_PATH, False),
    Case(f"GET {PRODUCTS}, anonymous", "products anon", PRODUCTS, False),
    Case(f"GET {PRODUCTS}, Bearer token", "products token", PRODUCTS, True),
    Case(f"GET {ME}, Bearer token", "users/me token", ME, True),
)


@dataclasses.dataclass(frozen=True)
class Row:
    case: Case
    load: LoadResult
    counters: dict[str, int]  # deltas over the measured run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.edge_auth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per row (10)")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per row (3)")
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--connections >= 1, --duration > 0 and --warmup >= 0")
    return args


def customer_token(rest_url: str) -> str:
    """A fresh demo-tenant customer, registered and logged in over REST."""
    email = f"bench-{secrets.token_hex(6)}@example.com"
    password = secrets.token_urlsafe(18)
    with httpx.Client(
        base_url=rest_url, headers={"X-Tenant-Id": TENANT}, timeout=10, trust_env=False
    ) as client:
        user = {"email": email, "username": email.split("@")[0], "password": password}
        created = client.post("/v1/users", json=user)
        if created.status_code != 201:
            raise SystemExit(f"POST /v1/users: {created.status_code} {created.text[:300]}")
        login = client.post("/v1/auth/login", json={"email": email, "password": password})
        if login.status_code != 200:
            raise SystemExit(f"POST /v1/auth/login: {login.status_code} {login.text[:300]}")
    return str(login.json()["accessToken"])


def counters(admin_url: str, patterns: dict[str, str] | None = None) -> dict[str, int]:
    """The COUNTERS (or `patterns`) now, from Envoy's admin /stats."""
    text = httpx.get(f"{admin_url}/stats?usedonly", timeout=5, trust_env=False).text
    values = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {
        label: sum(int(v) for name, v in values.items() if re.fullmatch(pattern, name))
        for label, pattern in (patterns or COUNTERS).items()
    }


def measure(args: argparse.Namespace) -> tuple[RunInfo, list[Row]]:
    binary = load.wrk_binary()  # before starting anything: a missing wrk fails fast
    rows: list[Row] = []
    with load.own_platform(load.HIGH_LIMITS_ENV, load.HIGH_LIMITS) as state:
        progress(f"platform up: {state.rest_url}")
        require_direct_response(state.rest_url)
        token = customer_token(state.rest_url)
        pids = {name: state.pids[name] for name in METERED if name in state.pids}
        for case in CASES:
            headers = {"X-Tenant-Id": TENANT}
            if case.token:
                headers["Authorization"] = f"Bearer {token}"
            url, c = state.rest_url + case.path, args.connections
            probe = httpx.get(url, headers=headers, timeout=10, trust_env=False)
            if probe.status_code != 200:
                raise SystemExit(f"GET {case.path}: {probe.status_code} {probe.text[:300]}")
            warm = load.warm_up(binary, url, headers=headers, connections=c, duration_s=args.warmup)
            if warm is not None and (warm.non_2xx or warm.socket_errors):
                raise SystemExit(f"warm-up of {case.label}: {warm.non_2xx} non-2xx")
            progress(f"measuring {case.label} for {args.duration:g} s")
            before = counters(state.envoy_admin_url)
            result = load.run_wrk(
                binary, url, headers=headers, connections=c, duration_s=args.duration, pids=pids
            )
            after = counters(state.envoy_admin_url)
            rows.append(Row(case, result, {k: after[k] - before[k] for k in COUNTERS}))
    info = RunInfo.now(
        load.wrk_version(binary), args.connections, args.duration, args.warmup, PLATFORM
    )
    return info, rows


def failures(rows: Sequence[Row]) -> list[str]:
    """Every row that saw a non-2xx answer (wrk or Envoy), a socket error or a timeout."""
    return [
        f"{r.case.label}: wrk {r.load.non_2xx} status >= 400, {r.load.socket_errors} socket "
        f"errors, {r.load.timeouts} timeouts; Envoy {r.counters[NON_2XX]} non-2xx"
        for r in rows
        if r.load.non_2xx or r.load.socket_errors or r.load.timeouts or r.counters[NON_2XX]
    ]


def render(info: RunInfo, rows: Sequence[Row]) -> str:
    cpu = cpu_lines([(r.case.short, r.load) for r in rows], (*METERED, "wrk"))
    head = f"{'Envoy counters over the measured run':<40}"
    lines = [head + "".join(f"{r.case.short:>15}" for r in rows)]
    lines.append(f"  {'(wrk responses)':<38}" + "".join(f"{r.load.requests:>15,}" for r in rows))
    for label in COUNTERS:
        lines.append(f"  {label:<38}" + "".join(f"{r.counters[label]:>15,}" for r in rows))
    anon, token = rows[1].load.cpu_us_per_request(), rows[2].load.cpu_us_per_request()
    rls = [f"{p} {anon.get(p, 0):.0f}" for p in ("ratelimit", "redis")]
    return "\n".join([
        *header_lines("Secure edge benchmark (bench/edge_auth.py)", info),
        "",
        *load_lines([(r.case.label, r.load) for r in rows], ratio=True),
        "ratio: req/s over the Envoy direct response's, same run",
        "",
        *cpu,
        f"  the rate-limit check per anonymous request: {', '.join(rls)} us; the token",
        f"  costs Envoy {token.get('envoy', 0) - anon.get('envoy', 0):+.0f} us per request "
        "(products token - products anon)",
        "  postgres (the /users/me read) runs in forked backends: its CPU is in 'other'",
        "",
        *lines,
        "  the checks count requests as they start, so also those wrk left in flight at the",
        "  end (answered or reset); cluster.*.ratelimit.ok counts the answers",
    ])  # fmt: skip


def to_json(info: RunInfo, rows: Sequence[Row]) -> dict[str, Any]:
    base = rows[0].load.rps
    return {
        **dataclasses.asdict(info),
        "rows": [
            {"label": r.case.label, "path": r.case.path, "token": r.case.token,
             "ratio_to_direct": r.load.rps / base, "cpu_us_per_request":
             r.load.cpu_us_per_request(), "envoy_counters": r.counters,
             **dataclasses.asdict(r.load)}
            for r in rows
        ],
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info, rows = measure(args)
    except LoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    except procs.LaunchError as exc:
        print(f"the platform did not start: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(to_json(info, rows), indent=2) if args.json else render(info, rows))
    if bad := failures(rows):
        print("FAILED: every request must succeed:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
