"""What a read outside a unit of work costs, in a transaction block and without one.

    PYTHONPATH=.:gen .venv/bin/python -m bench.db_reads [--reads 3000] [--turns 3] [--url URL]

A plain `engine.connect()` wraps a read in BEGIN and ROLLBACK, each a round trip;
`db.reads(engine).connect()` runs it in autocommit. This reads one row (`SELECT 1`)
through the kit's engine (`db.create_engine`, `pool_size=1`: one read at a time
opens one connection, which both ways use), in turns of the two ways; it prints
the wall time and this process's CPU per read of each way, best turn and median.
PostgreSQL is `--url`, `DATABASE_URL`, or one the bench starts with the launcher's
own code (`infra.start_postgres`) on a free port in a temporary run directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.launcher import PYTHONPATH, infra, procs

QUERY = sa.text("SELECT 1")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=3000, help="reads per turn and way (3000)")
    parser.add_argument("--turns", type=int, default=3, help="turns of the two ways (3)")
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL"), help="a PostgreSQL")
    args = parser.parse_args(argv)
    if args.reads < 1 or args.turns < 1:
        parser.error("--reads and --turns must be at least 1")
    return args


@contextmanager
def postgres(url: str | None) -> Iterator[str]:
    """`url`, or a PostgreSQL of the bench's own, removed afterwards."""
    if url:
        yield url
        return
    run_dir = procs.private_dir(Path(tempfile.mkdtemp(prefix="shop-db-reads-")))
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    proc, started = infra.start_postgres(run_dir, procs.free_port(), secrets.token_urlsafe(18), env)
    try:
        yield started
    finally:
        procs.stop(proc)
        shutil.rmtree(run_dir, ignore_errors=True)


async def turn(engine: AsyncEngine, reads: int) -> tuple[float, float]:
    """Wall and CPU microseconds per read of `reads` reads through `engine`."""

    async def one() -> None:
        async with engine.connect() as conn:
            await conn.execute(QUERY)

    for _ in range(min(200, reads)):  # warm: the connection, the prepared statement
        await one()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(reads):
        await one()
    return (
        (time.perf_counter() - wall) * 1e6 / reads,
        (time.process_time() - cpu) * 1e6 / reads,
    )


async def measure(url: str, reads: int, turns: int) -> dict[str, list[tuple[float, float]]]:
    engine = db.create_engine(url, pool_size=1)
    ways = {
        "connect() (BEGIN ... ROLLBACK)": engine,
        "db.reads(engine).connect()": db.reads(engine),
    }
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        for _ in range(turns):
            for name, way in ways.items():
                found[name].append(await turn(way, reads))
    finally:
        await engine.dispose()
    return found


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with postgres(args.url) as url:
        found = asyncio.run(measure(url, args.reads, args.turns))
    print("A one-row read outside a unit of work (bench/db_reads.py)")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, "
        f"{os.cpu_count()} cores; Python {platform.python_version()}; {args.reads} reads "
        f"per turn and way, {args.turns} turns, one connection, one read at a time"
    )
    print(f"{'':34}{'wall us/read':>14}{'CPU us/read':>13}   (best turn; median)")
    for name, runs in found.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(
            f"{name:34}{min(walls):>14.1f}{min(cpus):>13.1f}   "
            f"({statistics.median(walls):.1f}; {statistics.median(cpus):.1f})"
        )
    print("  CPU: this process (the client) only; PostgreSQL's backend is not metered")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
