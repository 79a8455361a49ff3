"""Benchmark: the platform's cached, authenticated `GET /v1/products?limit=20` through
Envoy next to a tuned FastAPI peer doing the same work, in one run, on one Redis.

    PYTHONPATH=.:gen .venv/bin/python -m bench.reads [--connections 32 128] [--duration 10]

It starts a platform of its own on free ports with the launcher's `Platform`
(LOG_LEVEL=INFO unless --log-level says otherwise: the services write their
access log, as in production), with limits far above the load, so every check
runs and none refuses. Whatever the checkout's edge config does for the shared
limits (a call to the rate-limit service, or Envoy's own buckets) is what is
measured; the Envoy counters under the table say which checks ran per request.
Beside it runs the peer (`bench/peers/products_api.py`: FastAPI, uvicorn,
uvloop, orjson, no access log) against the same JWKS, Redis, ERP and Warehouse.
For each connection count, platform and peer take turns under the same wrk
settings (`--rounds` repeats that; each row is then the round with the median
rate). Per row: rate, p50, p99, non-2xx (any fails the run), the ratio of the
platform's rate to the peer's, and the CPU per request of Envoy, the product
gateway, the rate-limit service, Redis, the peer and wrk. Needs `wrk` and the
`bench` extra (`bench/setup.sh` installs both). The table goes to stdout (JSON
with --json), progress to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx

from bench import edge_auth, load
from bench.edge_auth import NON_2XX, customer_token
from bench.load import LoadError, LoadResult, progress
from bench.products import TENANT
from bench.report import Machine, cpu_lines
from services.launcher import procs
from services.launcher.config import State

PATH = "/v1/products?limit=20"
TARGETS = ("platform", "peer")
METERED = ("envoy", "product", "ratelimit", "redis", "peer")
# Envoy's checks, per platform request: edge_auth's counters, and the shared-limit
# checks that failed open (the rate-limit call timed out or failed: not counted).
FAILED_OPEN = "cluster.*.ratelimit.failure_mode_allowed"
COUNTERS = {**edge_auth.COUNTERS, FAILED_OPEN: r"cluster\.\w+\.ratelimit\.failure_mode_allowed"}
CHECKS = (
    "http.edge.jwt_authn.allowed",
    "http.edge.rbac.allowed",
    "route_*.http_local_rate_limit.ok",
    "cluster.*.ratelimit.ok",
    "cluster.*.ratelimit.{over_limit,error}",
    FAILED_OPEN,
    "cluster.ratelimit.upstream_rq_total",
)
# Cores busy outside the measured processes above which a run says it shared the machine.
SHARED = 0.3


@dataclasses.dataclass(frozen=True)
class Row:
    target: str
    connections: int
    load: LoadResult
    counters: dict[str, int]  # Envoy's, over the measured run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reads",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[32, 128], help="wrk connections (32 128)"
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per row (10)")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per row (3)")
    parser.add_argument("--rounds", type=int, default=1, help="turns of each row (1)")
    parser.add_argument(
        "--log-level", default="INFO", help="the services' LOG_LEVEL (INFO: access log on)"
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy the gateway and the rate-limit service in "
        "each platform row, collapsed stacks into DIR (py-spy on PATH or --py-spy)"
    )  # fmt: skip
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy binary (py-spy)")
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON")
    args = parser.parse_args(argv)
    if min(args.connections) < 1 or args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("--connections >= 1, --duration > 0, --warmup >= 0 and --rounds >= 1")
    return args


@contextmanager
def peer(state: State) -> Iterator[tuple[str, int]]:
    """The FastAPI peer on a free port, on the platform's Redis, JWKS and stubs."""
    port = procs.free_port()
    argv = [
        sys.executable, "-m", "bench.peers.products_api", "--port", str(port),
        "--redis-url", state.redis_url, "--jwks-url", f"{state.rest_url}/.well-known/jwks.json",
        "--erp-url", state.erp_url, "--warehouse-url", state.warehouse_url,
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        if not process.stdout.readline().startswith("ready"):
            raise SystemExit("the peer did not start")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)


PROFILED = ("product", "ratelimit")
# Where a sampled stack's time goes: the first category whose marker is in the stack
# (frame names joined by ';'), else by its leaf frame; idle waits are left out.
STACK_CATEGORIES = (
    ("response headers as their own batch (send_initial_metadata)", ("send_headers",)),
    ("access log (record, queue, JSON line, write)", ("logging/", "services/kit/logs.py")),
    ("Redis round trip (redis-py, asyncio streams)", ("redis/", "asyncio/streams.py")),
    ("rate-limit servicer and use case", ("RateLimitServicer",)),
    ("the page: caches, building, serialising", ("Catalog.page", "list_response", "to_proto")),
    ("servicer: identity, other", ("ListProducts",)),
    ("platform interceptor (context, metrics, string rules)", ("services/kit/interceptors",)),
    ("OpenTelemetry server interceptor", ("OpenTelemetry", "opentelemetry", "trace/__init__")),
)
IDLE = ("QueueListener.dequeue", "SimpleQueue")


@contextmanager
def profiled(args: argparse.Namespace, state: State, connections: int) -> Iterator[None]:
    """py-spy recording each PROFILED process for the row (100 samples/s, GIL-less
    samples included), as collapsed stacks in args.profile."""
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for name in (n for n in PROFILED if n in state.pids):
        argv = [args.py_spy, "record", "--pid", str(state.pids[name]), "--rate", "100",
                "--duration", f"{args.duration:.0f}", "--format", "raw", "--nonblocking",
                "--output", str(out / f"{name}-{connections}.txt")]  # fmt: skip
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        yield
    finally:
        for spy in spies:
            spy.wait(timeout=args.duration + 30)


def stack_shares(path: Path) -> tuple[int, dict[str, float]]:
    """Samples in a py-spy collapsed-stack file and each category's share of them."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or any(idle in stack for idle in IDLE):
            continue
        leaf = stack.rsplit(";", 1)[-1]
        label = next((c for c, marks in STACK_CATEGORIES if any(m in stack for m in marks)), "")
        if not label:
            label = "grpc.aio and the event loop (Cython, C)" if leaf.startswith("Runner.run") else (
                "gRPC poller thread (C core)" if leaf.startswith("Thread.run") else "other Python"
            )  # fmt: skip
        counts[label] = counts.get(label, 0) + int(n)
    total = sum(counts.values())
    shares = {k: v / max(total, 1) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
    return total, shares


def profile_lines(directory: str, rows: Sequence[Row]) -> list[str]:
    """Each profiled process's samples by category, with the CPU per request they stand for."""
    lines = ["", f"Where the CPU goes (py-spy, 100 samples/s, in {directory})"]
    for row in (r for r in rows if r.target == "platform"):
        per = row.load.cpu_us_per_request()
        for name in PROFILED:
            path = Path(directory) / f"{name}-{row.connections}.txt"
            if not path.exists():
                continue
            total, shares = stack_shares(path)
            lines.append(
                f"  {name}, {row.connections} connections: {total} samples, "
                f"{per.get(name, 0):.0f} us of CPU per request"
            )
            for label, share in shares.items():
                lines.append(f"    {share:>6.1%} {share * per.get(name, 0):>6.0f} us  {label}")
    return lines


def _probe(url: str, headers: dict[str, str]) -> int:
    """Items on the page, after checking that it answers 200."""
    answer = httpx.get(url, headers=headers, timeout=10, trust_env=False)
    if answer.status_code != 200:
        raise SystemExit(f"GET {url}: {answer.status_code} {answer.text[:300]}")
    return len(answer.json()["items"])


def measure(args: argparse.Namespace) -> tuple[dict[str, Any], list[Row]]:
    binary = load.wrk_binary()  # before starting anything: a missing wrk fails fast
    runs: dict[tuple[str, int], list[Row]] = {}
    limits_env = load.HIGH_LIMITS_ENV
    with load.own_platform(limits_env, load.HIGH_LIMITS, log_level=args.log_level) as state:
        progress(f"platform up: {state.rest_url}")
        token = customer_token(state.rest_url)
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": TENANT}
        with peer(state) as (peer_url, peer_pid):
            pids = {n: state.pids[n] for n in METERED if n in state.pids} | {"peer": peer_pid}
            urls = {"platform": state.rest_url + PATH, "peer": peer_url + PATH}
            items = {target: _probe(url, headers) for target, url in urls.items()}
            if items["platform"] != items["peer"]:
                raise SystemExit(f"the pages differ: {items}")
            for round_ in range(args.rounds):
                for c in args.connections:
                    for target in TARGETS:
                        progress(f"round {round_ + 1}: {target}, {c} connections")
                        url = urls[target]
                        warm = load.warm_up(
                            binary, url, headers=headers, connections=c, duration_s=args.warmup
                        )
                        if warm is not None and (warm.non_2xx or warm.socket_errors):
                            raise SystemExit(f"warm-up of {target}: {warm.non_2xx} non-2xx")
                        before = edge_auth.counters(state.envoy_admin_url, COUNTERS)
                        spied = args.profile and target == "platform"
                        with profiled(args, state, c) if spied else nullcontext():
                            result = load.run_wrk(
                                binary, url, headers=headers, connections=c,
                                duration_s=args.duration, pids=pids,
                            )  # fmt: skip
                        after = edge_auth.counters(state.envoy_admin_url, COUNTERS)
                        delta = {k: after[k] - before[k] for k in COUNTERS}
                        runs.setdefault((target, c), []).append(Row(target, c, result, delta))
    info = {
        "machine": dataclasses.asdict(Machine.here()),
        "tool": load.wrk_version(binary),
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "log_level": args.log_level,
        "page_items": items["platform"],
    }
    return info, [_median(rows) for rows in runs.values()]


def _median(rows: list[Row]) -> Row:
    """The row whose rate is the median of its rounds (the lower middle one of an even count)."""
    rate = statistics.median_low(r.load.rps for r in rows)
    return next(r for r in rows if r.load.rps == rate)


def failures(rows: Sequence[Row]) -> list[str]:
    """Every row that saw a non-2xx answer (wrk or Envoy), a socket error or a timeout."""
    return [
        f"{r.target} at {r.connections}: wrk {r.load.non_2xx} status >= 400, "
        f"{r.load.socket_errors} socket errors, {r.load.timeouts} timeouts; "
        f"Envoy {r.counters[NON_2XX]} non-2xx"
        for r in rows
        if r.load.non_2xx or r.load.socket_errors or r.load.timeouts or r.counters[NON_2XX]
    ]


def _pair(rows: Sequence[Row], connections: int) -> tuple[Row, Row]:
    found = {r.target: r for r in rows if r.connections == connections}
    return found["platform"], found["peer"]


def render(info: dict[str, Any], rows: Sequence[Row]) -> str:
    m = info["machine"]
    lines = [
        "Cached authenticated read, platform and FastAPI peer (bench/reads.py)",
        f"machine   {m['cores']} cores (nproc), {m['cpu']}; {m['kernel']}; Python {m['python']}",
        f"load      {info['tool']}, 1 thread, {info['duration_s']:g} s per row after a "
        f"{info['warmup_s']:g} s warm-up, {info['rounds']} round(s) (median row);",
        f"          wrk shares the {m['cores']} cores with everything it measures",
        f"platform  the bench's own, LOG_LEVEL={info['log_level']}; every check on, limits far "
        "above the load",
        "peer      bench/peers/products_api.py: FastAPI + uvicorn + uvloop + orjson, no access "
        "log;",
        "          the same token, JWKS, Redis (one pipelined round trip), ERP and Warehouse",
        "",
        f"GET {PATH}, Bearer token{'conns':>22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'non-2xx':>9}{'ratio':>8}",
    ]
    for c in info["connections"]:
        platform, peer_row = _pair(rows, c)
        for row in (platform, peer_row):
            r = row.load
            non_2xx = r.non_2xx + row.counters[NON_2XX]
            ratio = f"{platform.load.rps / peer_row.load.rps:>8.2f}" if row is platform else ""
            label = "platform (Envoy + gRPC gateway)" if row is platform else "peer (FastAPI)"
            lines.append(
                f"  {label:<44}{c:>5}{r.rps:>9,.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
                f"{non_2xx:>9}{ratio}"
            )
            if r.socket_errors or r.timeouts:
                lines.append(f"    socket errors {r.socket_errors}, timeouts {r.timeouts}")
    lines.append("  ratio: the platform's req/s over the peer's at the same connections")
    last = max(info["connections"])
    platform, peer_row = _pair(rows, last)
    lines.append(
        f"  p99 at {last} connections: platform {platform.load.p99_ms:.1f} ms, "
        f"peer {peer_row.load.p99_ms:.1f} ms"
    )
    lines += ["", *cpu_lines([(f"{r.target}, {r.connections}", r.load) for r in rows],
                             (*METERED, "wrk"))]  # fmt: skip
    lines += ["", f"{'Envoy checks per platform request':<42}"
              + "".join(f"{c:>8}" for c in info["connections"])]  # fmt: skip
    for check in CHECKS:
        cells = ""
        for c in info["connections"]:
            platform, _ = _pair(rows, c)
            cells += f"{platform.counters[check] / max(platform.load.requests, 1):>8.2f}"
        lines.append(f"  {check:<40}{cells}")
    lines.append(
        "  counted as requests start (also those wrk leaves in flight at the end), so "
        "slightly above 1"
    )
    other = max(r.load.cores()[1] for r in rows)
    if other > SHARED:
        lines += [
            "",
            f"NOTE: up to {other:.2f} cores were busy outside the measured processes (other",
            "programs on this machine): rates and ratios of this run are not reliable; rerun",
            "it on a quiet machine (the CPU per request moves much less than the rates)",
        ]
    return "\n".join(lines)


def to_json(info: dict[str, Any], rows: Sequence[Row]) -> dict[str, Any]:
    ratios = {}
    for c in info["connections"]:
        platform, peer_row = _pair(rows, c)
        ratios[str(c)] = platform.load.rps / peer_row.load.rps
    return {
        **info,
        "ratio_platform_to_peer": ratios,
        "rows": [
            {"target": r.target, "connections": r.connections, "envoy_counters": r.counters,
             "cpu_us_per_request": r.load.cpu_us_per_request(), **dataclasses.asdict(r.load)}
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
    text = render(info, rows)
    if args.profile:
        text += "\n" + "\n".join(profile_lines(args.profile, rows))
    print(json.dumps(to_json(info, rows), indent=2) if args.json else text)
    if bad := failures(rows):
        print("FAILED: every request must succeed:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
