"""Webhook ingest: signed deliveries through Envoy to the event gateway, next to a FastAPI
peer doing the same work (bench/peers/ingest.py), in one run.

    PYTHONPATH=.:gen .venv/bin/python -m bench.ingest [--deliveries 1000]
        [--senders 100 1000] [--rounds 3] [--profile DIR] [--peer-coalesce]

It starts a platform of its own on free ports (launcher `Platform`, LOG_LEVEL=WARNING,
limits far above the load, no event worker: only the ingest path runs) with a webhook
source, and the peer on the same Redis with a stream of its own. Per sender count and
round, each side gets `--deliveries` fresh signed deliveries (Standard Webhooks) from
that many concurrent senders (aiohttp on uvloop, one connection each), the side that
goes first alternating by round. Reported per side: ack latency p50/p95/p99/max over
every round, deliveries per second durably enqueued (the stream's growth in Redis
over the sending time), failures (any answer but 202, or none, or a timeout), CPU per
delivery of each process, and the platform's rate as a multiple of the peer's. The
senders run on the same 2 cores, so their CPU is part of the load. `--profile DIR`
also records the event gateway under py-spy for the first platform round of each
sender count (collapsed stacks, `py-spy` on PATH: `pip download py-spy`, unzip).
The gateway coalesces concurrent deliveries' publishes into one pipelined round trip
(`PublishCoalescer`); the peer makes one round trip per delivery, or coalesces as the
gateway does with `--peer-coalesce`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from redis.asyncio import Redis

from bench import events, load
from bench.load import nearest_rank, progress
from services.event.config import EVENTS_QUEUE
from services.event.signatures import generate_secret
from services.kit.streams.queue import StreamKeys
from services.launcher import PYTHONPATH, ROOT, procs
from services.launcher.platform import State

TENANT = "ingest"
SOURCE = "ingestcourier"
PEER_QUEUE = "events-peer"


@dataclass
class Side:
    """What one side (the platform or the peer) answered over every round."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    sent: int = 0
    enqueued: int = 0
    seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.enqueued / self.seconds if self.seconds else 0.0


async def one_round(
    redis: Redis,
    side: Side,
    url: str,
    stream: str,
    requests: list[tuple[bytes, dict[str, str]]],
    senders: int,
    pids: Mapping[str, int],
) -> None:
    before = await redis.xlen(stream)
    own = load.own_cpu_s()
    with load.cpu_meter(pids) as cpu:
        sent = await events.send_all(url, requests, senders)
    after = load.own_cpu_s()
    side.sent += len(requests)
    side.latencies_ms += sent.latencies
    side.failures.update(sent.failures)
    # A duplicate answer (200) here would mean a delivery id was reused: a failure.
    if sent.duplicates:
        side.failures["200"] += sent.duplicates
    side.seconds += sent.seconds
    side.enqueued += await redis.xlen(stream) - before
    spent = {name: cpu[name] for name in pids}
    spent["senders"] = after - own
    for name, seconds in spent.items():
        side.cpu_s[name] = side.cpu_s.get(name, 0.0) + seconds


@contextmanager
def running_peer(
    platform: State, secret: str, *, coalesce: bool = False
) -> Iterator[tuple[str, int]]:
    """The FastAPI peer on a free port until the block ends: its base URL and pid."""
    port = procs.free_port()
    argv = [sys.executable, "-m", "bench.peers.ingest", "--port", str(port),
            "--redis-url", platform.redis_url, "--source", SOURCE, "--tenant", TENANT,
            "--queue", PEER_QUEUE, *(["--coalesce"] if coalesce else [])]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "PEER_WEBHOOK_SECRET": secret}
    proc = procs.start("ingest-peer", argv, log_dir=Path(platform.logs_dir), env=env, cwd=ROOT)
    try:
        procs.wait_until(proc, lambda: procs.tcp_open("127.0.0.1", port), what="the ingest peer")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        procs.stop(proc)


@contextmanager
def profiling(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy recording `pid` into `out` (collapsed stacks, one line per stack with its
    sample count: flamegraph.pl or speedscope draw them) while the block runs."""
    binary = shutil.which("py-spy")
    if out is None or binary is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [binary, "record", "--pid", str(pid), "--rate", "250", "--output", str(out),
            "--format", "raw", "--nonblocking"]  # fmt: skip
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)


def summary(side: Side, per: str) -> str:
    acks = sorted(side.latencies_ms)
    failed = sum(side.failures.values())
    cpu = ", ".join(
        f"{name} {seconds * 1e6 / max(side.sent, 1):.0f}" for name, seconds in side.cpu_s.items()
    )
    return (
        f"{side.name:>9} {per:>7} {side.sent:>6} {side.enqueued:>8} {failed:>6} "
        f"{side.rate:>7.0f} {nearest_rank(acks, 50):>7.1f} {nearest_rank(acks, 95):>7.1f} "
        f"{nearest_rank(acks, 99):>7.1f} {nearest_rank(acks, 100):>7.1f}   {cpu}"
    )


async def run(args: argparse.Namespace, platform: State, secret: str) -> list[str]:
    redis = Redis.from_url(platform.redis_url)
    lines = [
        f"webhook ingest (bench/ingest.py), {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start",
        f"{args.deliveries} fresh signed deliveries per side and round, {args.rounds} rounds; "
        "no event worker (ingest only); senders share the cores; the peer's publishes "
        + ("coalesced (--peer-coalesce)" if args.peer_coalesce else "one round trip each"),
        "",
        f"{'side':>9} {'senders':>7} {'sent':>6} {'enqueued':>8} {'failed':>6} {'del/s':>7} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}   CPU us per delivery",
    ]
    pids = {"envoy": platform.pids["envoy"], "event": platform.pids["event"]}
    failed: list[str] = []
    try:
        with running_peer(platform, secret, coalesce=args.peer_coalesce) as (peer_url, peer_pid):
            targets = {
                "platform": (f"{platform.rest_url}/v1/events/{SOURCE}",
                             StreamKeys.of(EVENTS_QUEUE).stream, pids),
                "peer": (f"{peer_url}/v1/events/{SOURCE}", StreamKeys.of(PEER_QUEUE).stream,
                         {"peer": peer_pid}),
            }  # fmt: skip
            # Warm-up: connections, code paths and Redis scripts on both sides.
            for url, _, _ in targets.values():
                await events.send_all(url, events.deliveries(secret, 200), 50)
            ratios = []
            for senders in args.senders:
                sides = {name: Side(name) for name in targets}
                for number in range(args.rounds):
                    order = list(targets) if number % 2 == 0 else list(reversed(targets))
                    for name in order:
                        url, stream, procs_ = targets[name]
                        requests = events.deliveries(secret, args.deliveries)
                        progress(f"round {number + 1}: {name}, {senders} senders")
                        profile = (
                            args.profile / f"event-{senders}.txt"
                            if args.profile and name == "platform" and number == 0
                            else None
                        )
                        with profiling(platform.pids["event"], profile):
                            await one_round(
                                redis, sides[name], url, stream, requests, senders, procs_
                            )
                ratio = sides["platform"].rate / max(sides["peer"].rate, 1e-9)
                ratios.append((senders, ratio))
                lines += [summary(side, str(senders)) for side in sides.values()]
                failed += [
                    f"{s.name} at {senders} senders"
                    for s in sides.values()
                    if s.failures or s.enqueued != s.sent
                ]
    finally:
        await redis.aclose()
    lines.append("")
    lines += [f"platform / peer deliveries/s at {s} senders: {r:.2f}x" for s, r in ratios]
    if failed:
        lines.append(
            "FAILURES: some delivery was not acknowledged with 202 and enqueued: "
            + ", ".join(failed)
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--senders", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None)
    # The peer's publishes coalesced as the gateway's are (default: a round trip each).
    parser.add_argument("--peer-coalesce", action="store_true")
    args = parser.parse_args(argv)
    load.open_many_files()
    secret = generate_secret()
    env = {
        **load.HIGH_LIMITS_ENV,
        "WEBHOOK_SOURCES": json.dumps({SOURCE: {"tenant": TENANT, "secrets": [secret]}}),
    }
    with load.own_platform(env, load.HIGH_LIMITS, event_workers=0) as platform:
        lines = uvloop.run(run(args, platform, secret))
    print("\n".join(lines))
    return 0 if not lines[-1].startswith("FAILURES") else 1


if __name__ == "__main__":
    sys.exit(main())
