"""What one upstream HTTP call costs the caller: the kit's `Upstream` next to bare clients.

    PYTHONPATH=.:gen .venv/bin/python -m bench.upstream_call [--calls 3000] [--concurrency 16] [--repeat 3]

Starts the notification stub (`python -m stubs notifications`) on a free port and
sends it the notifier's request (`POST /v1/messages`, a JSON body, an
`Idempotency-Key`), `--concurrency` calls in flight on one keep-alive pool of
that many connections, as the notifier sends a claimed batch. The rows, each run
in turn `--repeat` times on uvloop (the loop every process runs):

- `kit Upstream`: `services.kit.upstream.Upstream.request`, with what it does
  per call (deadline, breaker, retry budget, a client span, trace context, metrics);
- `bare aiohttp`: an `aiohttp.ClientSession`, the kit's transport, alone;
- `bare httpx`: an `httpx.AsyncClient` with the same pool size (the kit's transport
  until 2026-12).

Prints the calls per second and this process's CPU per call (user + system),
best of the repeats. The stub runs in its own process; its CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import httpx
import uvloop

from bench.load import own_cpu_s
from services.kit.upstream import Upstream, UpstreamPolicy
from services.launcher import procs

ROWS = ("kit Upstream", "bare aiohttp", "bare httpx")
MESSAGE = {"channel": "sms", "to": "+15550100", "body": "Your order is paid."}


def _headers() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4()), "X-Tenant-Id": "bench"}


@dataclass(frozen=True)
class Result:
    row: str
    calls_per_s: float
    cpu_us_per_call: float


async def _client(
    row: str, url: str, pool: int
) -> tuple[Callable[[], Awaitable[int]], Callable[[], Awaitable[None]]]:
    """One call and a close, for a row."""
    if row == "kit Upstream":
        up = Upstream("notifications", url, UpstreamPolicy(max_connections=pool))

        async def kit() -> int:
            answer = await up.request("POST", "/v1/messages", json=MESSAGE, headers=_headers())
            return answer.status_code

        return kit, up.aclose
    if row == "bare aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool))
        body = json.dumps(MESSAGE).encode()

        async def bare_aiohttp() -> int:
            headers = {**_headers(), "Content-Type": "application/json"}
            async with session.post(f"{url}/v1/messages", data=body, headers=headers) as answer:
                await answer.read()
                return answer.status

        return bare_aiohttp, session.close
    client = httpx.AsyncClient(
        base_url=url,
        trust_env=False,
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
    )

    async def bare_httpx() -> int:
        answer = await client.post("/v1/messages", json=MESSAGE, headers=_headers())
        return answer.status_code

    return bare_httpx, client.aclose


async def _drive(row: str, url: str, calls: int, concurrency: int) -> Result:
    call, close = await _client(row, url, concurrency)
    try:

        async def sender(count: int) -> None:
            for _ in range(count):
                status = await call()
                if status not in (200, 201):
                    raise RuntimeError(f"{row}: the stub answered {status}")

        await asyncio.gather(*(sender(200 // concurrency + 1) for _ in range(concurrency)))
        cpu, wall = own_cpu_s(), time.perf_counter()
        await asyncio.gather(*(sender(calls // concurrency) for _ in range(concurrency)))
        cpu, wall = own_cpu_s() - cpu, time.perf_counter() - wall
    finally:
        await close()
    done = calls // concurrency * concurrency
    return Result(row, done / wall, cpu / done * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    port = procs.free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "stubs", "notifications", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_until(
            None, lambda: procs.tcp_open("127.0.0.1", port), what="the stub", timeout=15
        )
        best: dict[str, Result] = {}
        for _ in range(args.repeat):
            for row in ROWS:
                result = uvloop.run(_drive(row, url, args.calls, args.concurrency))
                if row not in best or result.cpu_us_per_call < best[row].cpu_us_per_call:
                    best[row] = result
    finally:
        stub.terminate()
        stub.wait(timeout=10)

    print(
        f"upstream call (bench/upstream_call.py), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, httpx {httpx.__version__}"
    )
    print(
        f"POST /v1/messages to the notification stub, {args.calls} calls, "
        f"{args.concurrency} in flight, best of {args.repeat}\n"
    )
    print(f"{'row':<16}{'calls/s':>10}{'CPU us per call':>18}")
    for row in ROWS:
        r = best[row]
        print(f"{row:<16}{r.calls_per_s:>10,.0f}{r.cpu_us_per_call:>18,.0f}")


if __name__ == "__main__":
    main()
