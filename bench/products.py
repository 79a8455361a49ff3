"""Benchmark: cached product reads through the edge, Envoy's own direct response as
the baseline, and fail-fast latency with the ERP's circuit breaker open.

    PYTHONPATH=.:gen .venv/bin/python -m bench.products [--connections 32] [--duration 10]

Without --url it starts a platform of its own on free ports with the launcher's
`Platform` (LOG_LEVEL=WARNING, so the services write no per-request access log)
and removes it afterwards; with --url and --erp-url it measures a running one
(`./shop up`), whose ERP it takes down for a few seconds. Needs `wrk`. The table
goes to stdout (or JSON with --json), progress to stderr.

--compare-service-tls (own platform only) also starts a second platform with
SERVICE_TLS=off beside the first and measures the cached page on each in turn,
mTLS, plaintext, mTLS, plaintext (--tls-rounds pairs, 2): what mTLS between
Envoy and the product gateway costs per request against plaintext, in the same
run and under the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx

from bench import failfast, load
from bench.load import LoadError, LoadResult, progress, wrk_binary, wrk_version
from bench.report import Machine, Report, render
from services.launcher import procs

TENANT = "demo"  # seeded by the ERP stub with 30 products
PRODUCTS = "/v1/products"
DIRECT = "Envoy direct response /healthz"
HEALTH_PATH = "/healthz"
GATEWAY = "GET /v1/products (cached, through Envoy + gRPC gateway)"
GATEWAY_TLS = "GET /v1/products (cached; Envoy->gateway mTLS)"
GATEWAY_PLAIN = "GET /v1/products (cached; plaintext)"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the platform under test listens, and the pids to meter when it is ours."""

    rest_url: str
    erp_url: str
    warehouse_url: str | None
    pids: dict[str, int]
    description: str

    def upstreams(self) -> dict[str, str | None]:
        return {"ERP": self.erp_url, "Warehouse": self.warehouse_url}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.products",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per row (10)")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per row (3)")
    parser.add_argument("--url", help="edge of a running platform, e.g. http://127.0.0.1:8080")
    parser.add_argument("--erp-url", help="ERP stub of that platform, e.g. http://127.0.0.1:8101")
    parser.add_argument(
        "--fail-fast-requests", type=int, default=200, help="requests timed while open (200)"
    )
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON")
    parser.add_argument(
        "--compare-service-tls",
        action="store_true",
        help="also measure a platform without service mTLS (own platform only)",
    )
    parser.add_argument(
        "--tls-rounds", type=int, default=2, help="mTLS/plaintext row pairs to compare (2)"
    )
    args = parser.parse_args(argv)
    if bool(args.url) != bool(args.erp_url):
        parser.error("--url and --erp-url go together")
    if args.tls_rounds < 1:
        parser.error("--tls-rounds must be >= 1")
    if args.compare_service_tls and args.url:
        parser.error("--compare-service-tls starts platforms of its own: drop --url")
    if args.connections < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--connections >= 1, --duration > 0 and --warmup >= 0")
    if args.fail_fast_requests < 1:
        parser.error("--fail-fast-requests must be >= 1")
    return args


@contextmanager
def own_platform(service_tls: bool = True) -> Iterator[Target]:
    """The whole platform on free ports in a run directory of this process, removed after."""
    with load.own_platform(
        load.HIGH_LIMITS_ENV, load.HIGH_LIMITS, service_tls=service_tls
    ) as state:
        yield Target(
            rest_url=state.rest_url,
            erp_url=state.erp_url,
            warehouse_url=state.warehouse_url,
            pids={name: state.pids[name] for name in ("envoy", "product")},
            description=(
                "the bench's own (launcher Platform on free ports), LOG_LEVEL=WARNING: no\n"
                "          per-RPC service log lines; Envoy --concurrency 1 keeps its access log;\n"
                "          limits far above the load, every edge check on (bench/edge_auth.py)"
            ),
        )


@contextmanager
def target(args: argparse.Namespace) -> Iterator[Target]:
    if not args.url:
        with own_platform() as started:
            yield started
        return
    yield Target(args.url.rstrip("/"), args.erp_url.rstrip("/"), None, {}, f"running at {args.url}")


def _pooled(results: Sequence[LoadResult]) -> tuple[float, dict[str, float]]:
    """Requests per second and CPU microseconds per request over several rows."""
    requests = sum(r.requests for r in results)
    seconds = sum(r.duration_s for r in results)
    cpu: dict[str, float] = {}
    for result in results:
        for name, spent in result.cpu_s.items():
            cpu[name] = cpu.get(name, 0.0) + spent
    return requests / seconds, {name: s * 1e6 / max(requests, 1) for name, s in cpu.items()}


def service_tls_note(rounds: Sequence[tuple[LoadResult, LoadResult]]) -> str:
    """What mTLS between Envoy and the gateway costs: rate and CPU per request, pooled."""
    tls_rps, tls_cpu = _pooled([secured for secured, _ in rounds])
    plain_rps, plain_cpu = _pooled([open_ for _, open_ in rounds])
    cpu = ", ".join(
        f"{name} {tls_cpu[name]:.0f} vs {plain_cpu[name]:.0f} us "
        f"({tls_cpu[name] - plain_cpu[name]:+.0f})"
        for name in ("envoy", "product")
        if name in tls_cpu and name in plain_cpu
    )
    return (
        f"service mTLS (Envoy->gateway), cached page, {len(rounds)} rounds pooled: "
        f"{tls_rps:,.0f} vs {plain_rps:,.0f} req/s plaintext ({tls_rps / plain_rps:.3f}); "
        f"CPU per request {cpu}. Both platforms ran side by side, each idle while the other "
        "was measured."
    )


def _requests_seen(url: str | None) -> int | None:
    if url is None:
        return None
    return int(httpx.get(f"{url}/_admin/stats", timeout=5, trust_env=False).json()["requests"])


def _get(url: str) -> httpx.Response:
    return httpx.get(url, headers={"X-Tenant-Id": TENANT}, timeout=10, trust_env=False)


def require_direct_response(rest_url: str) -> None:
    """The edge must answer /healthz itself (a direct_response route), or there is no baseline."""
    answer = _get(rest_url + HEALTH_PATH)
    if answer.status_code != 200:
        raise SystemExit(f"GET {HEALTH_PATH}: {answer.status_code} {answer.text[:300]}")


def run(args: argparse.Namespace) -> Report:
    binary = wrk_binary()  # before starting anything: a missing wrk fails fast

    def row(url: str, pids: dict[str, int]) -> LoadResult:
        return load.measure(
            binary, url, headers={"X-Tenant-Id": TENANT}, connections=args.connections,
            warmup_s=args.warmup, duration_s=args.duration, pids=pids,
        )  # fmt: skip

    notes: list[str] = []
    with contextlib.ExitStack() as platforms:
        t = platforms.enter_context(target(args))
        plain = None
        if args.compare_service_tls:
            progress("a second platform beside it with SERVICE_TLS=off")
            plain = platforms.enter_context(own_platform(service_tls=False))
            require_direct_response(plain.rest_url)
        progress(f"platform {t.description}: {t.rest_url}")
        page = _get(t.rest_url + PRODUCTS)
        if page.status_code != 200:
            raise SystemExit(f"GET {PRODUCTS}: {page.status_code} {page.text[:300]}")
        require_direct_response(t.rest_url)
        label = DIRECT
        direct = row(t.rest_url + HEALTH_PATH, t.pids)
        before = {name: _requests_seen(u) for name, u in t.upstreams().items()}
        gateway = row(t.rest_url + PRODUCTS, t.pids)
        upstream: dict[str, int | None] = {}
        for name, upstream_url in t.upstreams().items():
            now, then = _requests_seen(upstream_url), before[name]
            upstream[name] = None if now is None or then is None else now - then
        rows = [(label, direct), (GATEWAY, gateway)]
        if plain is not None:
            rounds = [(gateway, row(plain.rest_url + PRODUCTS, plain.pids))]
            for _ in range(args.tls_rounds - 1):
                rounds.append(
                    (row(t.rest_url + PRODUCTS, t.pids), row(plain.rest_url + PRODUCTS, plain.pids))
                )
            rows = [(label, direct)]
            for n, (secured, open_) in enumerate(rounds, 1):
                rows += [(f"{GATEWAY_TLS} #{n}", secured), (f"{GATEWAY_PLAIN} #{n}", open_)]
            notes.append(service_tls_note(rounds))
        progress(f"fail-fast: ERP down, {args.fail_fast_requests} requests with the breaker open")
        breaker = failfast.measure(
            t.rest_url, t.erp_url, reference_tenant=TENANT, n=args.fail_fast_requests, pids=t.pids
        )
    return Report(
        machine=Machine.here(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        tool=wrk_version(binary),
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
        platform=t.description,
        rows=rows,
        page_items=len(page.json().get("items", [])),
        upstream_calls=upstream,
        breaker=breaker,
        notes=notes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except LoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    except failfast.BreakerDidNotOpen as exc:
        print(f"fail-fast phase: {exc}", file=sys.stderr)
        return 1
    except procs.LaunchError as exc:
        print(f"the platform did not start: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json(), indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
