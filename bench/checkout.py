"""Checkout under load: N customers at once through Envoy, each placing an order for
one unit of one product, then the wait until every accepted order is settled.

    PYTHONPATH=.:gen .venv/bin/python -m bench.checkout [--customers 1000]
        [--scarce-stock 100] [--pipelines 1] [--placement-only] [--json]

It starts a platform of its own on free ports (launcher `Platform`, LOG_LEVEL=WARNING,
limits far above the load: `bench.load.HIGH_LIMITS`), with `--pipelines` order
pipeline workers. The customers' tokens are signed with the run's own signing key
(what the user service would issue; registering 1,000 accounts would measure
Argon2 instead). Two runs in the same platform:

1. scarce: a product with `--scarce-stock` units (100) and N buyers;
2. plenty: a product with N units and N buyers.

Per run, the N placements wait at a barrier and go out together over N connections
(aiohttp), each timed from send to answer. Reported: accepted (201/202), rejected
for stock (409 insufficient_stock), other 4xx, 5xx (must be 0), oversold (accepted
beyond the stock, and the ledger's units: must be 0), placement p50/p95/p99/max,
placements answered per second (every answer, 201 or 409, over the burst's wall time)
and orders/s placed (accepted over the same time), the time until the
last accepted order is settled (fulfilled or failed) and orders/s completed through
payment (captures in the Payment provider stub's ledger over that time), and the
payment captures per order (must be 1), and what PostgreSQL did per accepted order
over placement and settlement (`pg_stat_database`: backends started, commits, rows
read by table scans; its statistics reach the view within about a second of each
transaction, so these are close, not exact). The client shares the 2 cores.

`--placement-only` measures what the placement path alone can take: the processes
of an order's later life (the pipeline workers, the outbox relay, the notifiers;
`LATER_LIFE`) are paused (SIGSTOP) while each burst is answered and resumed
(SIGCONT) for the settlement, as if they ran on other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import load
from bench.load import nearest_rank, progress
from services.kit import db
from services.launcher.platform import State
from services.order.schema import order_items, orders
from services.user.tokens import KeyRing, TokenIssuer

TENANT = "checkout-load"
SETTLED = ("fulfilled", "failed", "cancelled", "refunded")
# The processes that carry an order on after placement (by launcher name prefix).
LATER_LIFE = ("order-pipeline", "relay", "notifier")


@dataclass(frozen=True)
class RunResult:
    label: str
    customers: int
    stock: int
    accepted: int
    rejected_for_stock: int
    other_4xx: int
    server_errors: int
    no_answer: int
    oversold: int
    placement_s: float
    answered_per_s: float
    placed_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    settled: int
    settle_s: float
    completed_per_s: float
    fulfilled: int
    captures: int
    orders_charged_twice: int
    ledger_available: int
    ledger_reserved: int
    # PostgreSQL per accepted order: backends started, commits, rows its scans returned.
    pg_backends_per_order: float
    pg_commits_per_order: float
    pg_rows_scanned_per_order: float
    # CPU milliseconds per accepted order, by process, over placement and settlement
    # ("machine": every core; "other": the machine less the named processes).
    cpu_ms_per_order: dict[str, float]


def issuer(state: State) -> TokenIssuer:
    key = Path(state.run_dir) / "keys" / "jwt-signing.pem"
    return TokenIssuer(KeyRing.load([key]), "shop-platform", "shop-api", ttl_s=3600)


def new_product(http: httpx.Client, admin: str, stock: int) -> str:
    headers = {"Authorization": f"Bearer {admin}"}
    sku = f"LOAD-{uuid.uuid4().hex[:8].upper()}"
    made = http.post(
        "/v1/products",
        json={"sku": sku, "name": f"Load {sku}", "priceCents": 1999},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    made.raise_for_status()
    product = str(made.json()["id"])
    http.put(
        f"/v1/admin/inventory/{product}",
        json={"available": stock, "lowStockThreshold": 0},
        headers={**headers, "If-Match": '"0"', "Idempotency-Key": uuid.uuid4().hex},
    ).raise_for_status()
    return product


async def place_all(
    url: str, tokens: list[str], product: str
) -> tuple[list[tuple[int, float, str]], float]:
    """Every customer's placement at once; (status, seconds, code) each, and the wall time."""
    body = json.dumps({"items": [{"productId": product, "quantity": 1}]})
    connector = aiohttp.TCPConnector(limit=len(tokens), force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    results: list[tuple[int, float, str]] = []
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        # Open the connections first, so the burst measures placement, not TCP setup.
        await asyncio.gather(*(session.get("/healthz") for _ in range(len(tokens))))
        gate = asyncio.Event()

        async def one(token: str) -> None:
            headers = {
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": uuid.uuid4().hex,
                "Content-Type": "application/json",
            }
            await gate.wait()
            started = time.perf_counter()
            try:
                async with session.post("/v1/orders", data=body, headers=headers) as answer:
                    text = await answer.text()
                    try:
                        parsed = json.loads(text)
                    except ValueError:
                        parsed = {"code": text[:60]}
                    # The order id of an accepted placement; the error code of a refusal.
                    code = str(parsed.get("id" if answer.status < 400 else "code", ""))
                    results.append((answer.status, time.perf_counter() - started, code))
            except (TimeoutError, aiohttp.ClientError) as exc:
                results.append((0, time.perf_counter() - started, type(exc).__name__))

        tasks = [asyncio.create_task(one(t)) for t in tokens]
        await asyncio.sleep(0.5)
        began = time.perf_counter()
        gate.set()
        await asyncio.gather(*tasks)
        return results, time.perf_counter() - began


async def by_status(conn: AsyncConnection, product: str) -> Counter[str]:
    """The load tenant's orders of `product`, counted by status."""
    rows = await conn.execute(
        sa.select(orders.c.status, sa.func.count())
        .select_from(orders.join(order_items, order_items.c.order_id == orders.c.id))
        .where(orders.c.tenant_id == TENANT, order_items.c.product_id == uuid.UUID(product))
        .group_by(orders.c.status)
    )
    return Counter({status: count for status, count in rows})


PG_COUNTERS = sa.text(
    "SELECT sessions, xact_commit, tup_returned FROM pg_stat_database"
    " WHERE datname = current_database()"
)


async def pg_counters(state: State) -> tuple[int, int, int]:
    """The database's backends started, commits, and rows returned by its scans so far."""
    await asyncio.sleep(1.5)  # the backends' statistics of the last second reach the view
    engine = db.create_engine(state.database_url, pool_size=1)
    try:
        async with db.reads(engine).connect() as conn:
            sessions, commits, scanned = (await conn.execute(PG_COUNTERS)).one()
        return int(sessions), int(commits), int(scanned)
    finally:
        await engine.dispose()


async def settle(
    state: State, product: str, accepted: int, began: float, timeout_s: float
) -> tuple[int, float, Counter[str]]:
    """Wait until every accepted order of the product is settled: how many are, the
    seconds since `began`, and the orders by status."""
    engine = db.create_engine(state.database_url, pool_size=1)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            async with engine.connect() as conn:
                counts = await by_status(conn, product)
            settled = sum(counts[s] for s in SETTLED)
            if settled >= accepted or time.monotonic() >= deadline:
                return settled, time.perf_counter() - began, counts
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


def captures(state: State, order_ids: list[str]) -> dict[str, int]:
    """Captures per order in the Payment provider stub's ledger."""
    counts: dict[str, int] = {}
    with httpx.Client(base_url=state.urls["PAYMENTS_URL"], timeout=10) as stub:
        for order_id in order_ids:
            ledger = stub.get("/_admin/ledger", params={"orderId": order_id, "tenant": TENANT})
            ledger.raise_for_status()
            counts[order_id] = int(ledger.json()["captures"]["count"])
    return counts


def later_life(state: State) -> list[int]:
    """The pids of the processes that carry an order on after placement."""
    return [pid for name, pid in state.pids.items() if name.startswith(LATER_LIFE)]


def run(
    state: State,
    label: str,
    customers: int,
    stock: int,
    settle_timeout_s: float,
    paused: list[int],
) -> RunResult:
    """One burst and its settlement; `paused` sit out the burst (SIGSTOP, then SIGCONT)."""
    mint = issuer(state)
    with httpx.Client(base_url=state.rest_url, timeout=30) as http:
        admin = mint.issue(f"bench-admin-{uuid.uuid4().hex[:6]}", TENANT, "admin").token
        product = new_product(http, admin, stock)
        tokens = [mint.issue(str(uuid.uuid4()), TENANT, "customer").token for _ in range(customers)]
        progress(f"{label}: {customers} customers for {stock} units")
        pg_before = asyncio.run(pg_counters(state))
        began = time.perf_counter()
        with load.cpu_meter(state.pids) as spent:
            for pid in paused:
                os.kill(pid, signal.SIGSTOP)
            try:
                answers, wall = asyncio.run(place_all(state.rest_url, tokens, product))
            finally:
                for pid in paused:
                    os.kill(pid, signal.SIGCONT)
            by = Counter(status for status, _, _ in answers)
            accepted = by[201] + by[202]
            rejected = sum(1 for s, _, c in answers if s == 409 and c == "insufficient_stock")
            progress(f"{label}: placed {accepted} in {wall:.2f} s; waiting for settlement")
            settled, settle_s, final = asyncio.run(
                settle(state, product, accepted, began, settle_timeout_s)
            )
        pg_after = asyncio.run(pg_counters(state))
        # Less the one backend and commit each pg_counters call makes itself.
        pg = [after - before - 1 for after, before in zip(pg_after, pg_before, strict=True)]
        ids = [c for s, _, c in answers if s in (201, 202)]
        new = {k: v for k, v in captures(state, ids).items() if v}
        level = http.get(f"/v1/inventory/{product}", headers={"X-Tenant-Id": TENANT}).json()
    latencies = sorted(t for _, t, _ in answers)
    held = int(level.get("reserved", 0))
    return RunResult(
        label=label,
        customers=customers,
        stock=stock,
        accepted=accepted,
        rejected_for_stock=rejected,
        other_4xx=sum(v for s, v in by.items() if 400 <= s < 500) - rejected,
        server_errors=sum(v for s, v in by.items() if s >= 500),
        no_answer=by[0],
        oversold=max(accepted - stock, 0) + max(-int(level.get("available", 0)), 0),
        placement_s=round(wall, 3),
        answered_per_s=round(len(answers) / wall, 1) if wall else 0.0,
        placed_per_s=round(accepted / wall, 1) if wall else 0.0,
        p50_ms=round(nearest_rank(latencies, 50) * 1000, 1),
        p95_ms=round(nearest_rank(latencies, 95) * 1000, 1),
        p99_ms=round(nearest_rank(latencies, 99) * 1000, 1),
        max_ms=round(latencies[-1] * 1000, 1) if latencies else 0.0,
        settled=settled,
        settle_s=round(settle_s, 2),
        completed_per_s=round(len(new) / settle_s, 1) if settle_s else 0.0,
        fulfilled=final.get("fulfilled", 0),
        captures=sum(new.values()),
        orders_charged_twice=sum(1 for v in new.values() if v > 1),
        ledger_available=int(level.get("available", 0)),
        ledger_reserved=held,
        pg_backends_per_order=round(pg[0] / max(accepted, 1), 3),
        pg_commits_per_order=round(pg[1] / max(accepted, 1), 2),
        pg_rows_scanned_per_order=round(pg[2] / max(accepted, 1), 1),
        cpu_ms_per_order=per_order(spent, accepted),
    )


def per_order(spent: dict[str, float], orders: int) -> dict[str, float]:
    named = {k: v for k, v in spent.items() if k not in load.MACHINE_KEYS and k != "wrk"}
    shares = {**named, "machine": spent["machine"], "other": spent["machine"] - sum(named.values())}
    n = max(orders, 1)
    return {k: round(v * 1000 / n, 2) for k, v in shares.items() if v * 1000 / n >= 0.05}


def table(results: list[RunResult]) -> str:
    rows: list[tuple[str, Callable[[RunResult], object]]] = [
        ("customers / stock", lambda r: f"{r.customers} / {r.stock}"),
        ("accepted", lambda r: r.accepted),
        ("rejected for stock (409)", lambda r: r.rejected_for_stock),
        ("other 4xx", lambda r: r.other_4xx),
        ("5xx", lambda r: r.server_errors),
        ("no answer", lambda r: r.no_answer),
        ("oversold", lambda r: r.oversold),
        ("placement burst", lambda r: f"{r.placement_s} s"),
        ("placements answered/s (any answer)", lambda r: r.answered_per_s),
        ("orders/s placed (accepted)", lambda r: r.placed_per_s),
        (
            "placement p50 / p95 / p99 / max",
            lambda r: f"{r.p50_ms} / {r.p95_ms} / {r.p99_ms} / {r.max_ms} ms",
        ),
        ("settled (of accepted)", lambda r: f"{r.settled} / {r.accepted}"),
        ("until the last is settled", lambda r: f"{r.settle_s} s"),
        ("orders/s completed through payment", lambda r: r.completed_per_s),
        ("fulfilled", lambda r: r.fulfilled),
        ("captures / orders charged twice", lambda r: f"{r.captures} / {r.orders_charged_twice}"),
        (
            "ledger available / reserved after",
            lambda r: f"{r.ledger_available} / {r.ledger_reserved}",
        ),
        ("PostgreSQL backends started / order", lambda r: r.pg_backends_per_order),
        ("PostgreSQL commits / order", lambda r: r.pg_commits_per_order),
        ("PostgreSQL rows scanned / order", lambda r: r.pg_rows_scanned_per_order),
    ]
    width = max(len(name) for name, _ in rows)
    head = f"{'':<{width}}  " + "  ".join(f"{r.label:>24}" for r in results)
    lines = [head]
    for name, get in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{get(r)!s:>24}" for r in results))
    processes = sorted(
        {p for r in results for p in r.cpu_ms_per_order},
        key=lambda p: -max(r.cpu_ms_per_order.get(p, 0) for r in results),
    )
    lines.append("")
    lines.append(f"{'CPU ms per accepted order, by process':<{width}}")
    for name in processes:
        cells = "  ".join(f"{r.cpu_ms_per_order.get(name, 0):>24}" for r in results)
        lines.append(f"  {name:<{width - 2}}  {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--scarce-stock", type=int, default=100)
    parser.add_argument("--pipelines", type=int, default=1)
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    parser.add_argument(
        "--placement-only",
        action="store_true",
        help="pause the pipeline, relay and notifiers while each burst is answered",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    load.open_many_files()
    progress("starting a platform of its own")
    with load.own_platform(
        load.HIGH_LIMITS_ENV, load.HIGH_LIMITS, replicas={"order-pipeline": args.pipelines}
    ) as state:
        paused = later_life(state) if args.placement_only else []
        results = [
            run(state, "scarce", args.customers, args.scarce_stock, args.settle_timeout, paused),
            run(state, "plenty", args.customers, args.customers, args.settle_timeout, paused),
        ]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(
            f"checkout: {args.customers} concurrent customers through Envoy, one unit each, "
            f"{args.pipelines} pipeline worker(s)"
            f"{'; the later life paused during each burst (--placement-only)' if paused else ''}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        )
        print(table(results))
    bad = any(r.server_errors or r.oversold or r.orders_charged_twice for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
