"""Load run of the event gateway: N signed webhooks at C concurrent connections through
Envoy, then the wait until every accepted event is processed or dead-lettered.

    PYTHONPATH=.:gen .venv/bin/python -m bench.events [--events 2000]
        [--connections 100 1000] [--failure-rate 0.2] [--workers 2] [--concurrency 200]

It starts a platform of its own on free ports (launcher `Platform`, LOG_LEVEL=WARNING)
with a webhook source for a load tenant whose shipments are seeded in MongoDB, and
sets the Routing stub to its 2 s latency with `--failure-rate` of its answers 503.
Per connection count, the deliveries are signed first (Standard Webhooks), then sent
by C client tasks over C connections (aiohttp), each timed from send to acknowledgement.
Reported: ack latency p50/p95/p99/max, accepted per second, failures (any answer but
202, or none), the queue's retries and dead letters during the run, and the time from
the first send until the last event was settled (processed or dead-lettered). The
client runs on the same 2 cores as the platform, so its CPU is part of the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import httpx
from redis.asyncio import Redis

from bench import load
from bench.load import nearest_rank, progress
from services.event.config import EVENTS_QUEUE
from services.event.signatures import decode_secret, generate_secret, sign
from services.kit.streams import Queue, QueueStats
from services.launcher.platform import State
from services.launcher.provision import seed_shipments
from stubs.shipments import shipment_id

TENANT = "load"
SOURCE = "loadcourier"
SHIPMENTS = 2000


@dataclass(frozen=True)
class RunResult:
    events: int
    connections: int
    accepted: int
    duplicates: int
    failures: int
    failures_by_status: dict[str, int]
    ingest_s: float
    accepted_per_s: float
    ack_p50_ms: float
    ack_p95_ms: float
    ack_p99_ms: float
    ack_max_ms: float
    retries: int
    deferred: int
    dead_lettered: int
    processed: int
    routing_calls: int
    routing_503s: int
    completion_s: float


def deliveries(secret: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
    """`count` signed webhook requests, one shipment each (cycling through the seeded ones)."""
    key, now, out = decode_secret(secret), int(time.time()), []
    for n in range(count):
        event_id = f"evt_{uuid.uuid4().hex}"
        body = json.dumps({
            "type": "shipment.status_changed",
            "data": {"shipmentId": shipment_id(n % SHIPMENTS + 1), "status": "in_transit"},
        }).encode()  # fmt: skip
        headers = {"webhook-id": event_id, "webhook-timestamp": str(now),
                   "webhook-signature": sign(key, event_id, now, body),
                   "content-type": "application/json"}  # fmt: skip
        out.append((body, headers))
    return out


@dataclass
class Sent:
    """What the clients saw: ack latencies of accepted events, and every other answer."""

    latencies: list[float]
    accepted: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)


async def send_all(
    url: str, requests: list[tuple[bytes, dict[str, str]]], connections: int
) -> Sent:
    """Send every request with `connections` concurrent clients."""
    sent = Sent(latencies=[])
    pending = iter(requests)
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            for body, headers in pending:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        text = await response.text()
                        status = str(response.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, text = type(exc).__name__, str(exc)
                if status == "202":
                    sent.latencies.append((time.perf_counter() - started) * 1000)
                    sent.accepted += 1
                elif status == "200":
                    sent.duplicates += 1
                else:
                    if not sent.failures:
                        progress(f"first failure: {status} {text[:300]}")
                    sent.failures[status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        sent.seconds = time.perf_counter() - started
        return sent


async def settled(queue: Queue, before: QueueStats, expected: int, limit_s: float) -> QueueStats:
    """The queue's stats once `expected` more messages were processed or dead-lettered."""
    deadline = time.monotonic() + limit_s
    while True:
        now = await queue.stats()
        done = (now.processed - before.processed) + (now.dead_lettered - before.dead_lettered)
        if done >= expected or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.2)


def routing_stats(platform: State) -> tuple[int, int]:
    """Requests that reached the Routing stub so far, and how many it answered 503 on purpose."""
    stats = httpx.get(f"{platform.routing_url}/_admin/stats").raise_for_status().json()
    return int(stats["requests"]), int(stats["faults"]["error"])


async def run_once(platform: State, secret: str, events: int, connections: int) -> RunResult:
    requests = deliveries(secret, events)
    calls_before, errors_before = routing_stats(platform)
    redis = Redis.from_url(platform.redis_url)
    queue = Queue(redis, EVENTS_QUEUE)
    try:
        before = await queue.stats()
        progress(f"sending {events} events over {connections} connections")
        first_send = time.perf_counter()
        sent = await send_all(f"{platform.rest_url}/v1/events/{SOURCE}", requests, connections)
        progress(f"{sent.accepted} accepted in {sent.seconds:.1f} s; waiting for the workers")
        after = await settled(queue, before, sent.accepted, limit_s=900)
        completion_s = time.perf_counter() - first_send
        calls_after, errors_after = routing_stats(platform)
    finally:
        await redis.aclose()
    acks = sorted(sent.latencies)
    return RunResult(
        events=events,
        connections=connections,
        accepted=sent.accepted,
        duplicates=sent.duplicates,
        failures=sum(sent.failures.values()),
        failures_by_status=dict(sent.failures),
        ingest_s=round(sent.seconds, 2),
        accepted_per_s=round(sent.accepted / sent.seconds, 1),
        ack_p50_ms=round(nearest_rank(acks, 50), 1),
        ack_p95_ms=round(nearest_rank(acks, 95), 1),
        ack_p99_ms=round(nearest_rank(acks, 99), 1),
        ack_max_ms=round(nearest_rank(acks, 100), 1),
        retries=after.retried - before.retried,
        deferred=after.deferred - before.deferred,
        dead_lettered=after.dead_lettered - before.dead_lettered,
        processed=after.processed - before.processed,
        routing_calls=calls_after - calls_before,
        routing_503s=errors_after - errors_before,
        completion_s=round(completion_s, 1),
    )


def table(results: Sequence[RunResult], args: argparse.Namespace) -> str:
    lines = [
        f"events per run: {args.events}; routing: 2 s latency, {args.failure_rate:.0%} answered 503;",
        f"workers: {args.workers} processes x {args.concurrency} handler slots; "
        f"retries: {args.max_attempts} attempts, backoff base {args.retry_base_s} s (full jitter)",
        "",
        f"{'conns':>6} {'accepted':>8} {'failed':>6} {'acc/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'retries':>7} {'DLQ':>4} {'e2e s':>6}",
    ]
    for r in results:
        lines.append(
            f"{r.connections:>6} {r.accepted:>8} {r.failures:>6} {r.accepted_per_s:>7.0f} "
            f"{r.ack_p50_ms:>7.1f} {r.ack_p95_ms:>7.1f} {r.ack_p99_ms:>7.1f} {r.ack_max_ms:>7.1f} "
            f"{r.retries:>7} {r.dead_lettered:>4} {r.completion_s:>6.1f}"
        )
    lines.append("")
    for r in results:
        failed = ", ".join(f"{k}: {v}" for k, v in r.failures_by_status.items()) or "none"
        lines.append(
            f"{r.connections:>6} conns: processed {r.processed}, dead-lettered {r.dead_lettered}; "
            f"routing calls {r.routing_calls}, of them answered 503 by the fault injector "
            f"{r.routing_503s}; deferred while the breaker was open {r.deferred}; "
            f"failed acks: {failed}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--connections", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--failure-rate", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--retry-base-s", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    load.open_many_files()
    secret = generate_secret()
    env = {
        **load.HIGH_LIMITS_ENV,
        "WEBHOOK_SOURCES": json.dumps({SOURCE: {"tenant": TENANT, "secrets": [secret]}}),
        "EVENT_WORKER_CONCURRENCY": str(args.concurrency),
        "EVENT_WORKER_MAX_ATTEMPTS": str(args.max_attempts),
        "EVENT_WORKER_RETRY_BASE_S": str(args.retry_base_s),
        "EVENT_WORKER_RETRY_CAP_S": "10",
    }
    results: list[RunResult] = []
    with load.own_platform(env, load.HIGH_LIMITS, event_workers=args.workers) as platform:
        seed_shipments({"MONGO_URL": platform.mongo_url}, TENANT, SHIPMENTS)
        faults: dict[str, Any] = {"latency_ms": 2000, "error_rate": args.failure_rate, "seed": 7}
        httpx.put(f"{platform.routing_url}/_admin/faults", json=faults).raise_for_status()
        for connections in args.connections:
            results.append(asyncio.run(run_once(platform, secret, args.events, connections)))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(table(results, args))
    return 0 if all(r.failures == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
