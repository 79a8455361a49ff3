"""What the kit costs one unary RPC: a no-op `GetProduct` served by `create_server`.

    PYTHONPATH=.:gen .venv/bin/python -m bench.kit_call [--calls 6000] [--concurrency 8] [--repeat 3] [--client]

Each row is a server process of its own (a process has one tracer provider),
answering the same no-op handler; this process calls it over a real channel
(grpc.aio, `--concurrency` calls in flight) and reads the server's CPU time
(every thread of it, from /proc) around the measured calls. The rows:

- `bare grpc.aio`: `grpc.aio.server()` without interceptors, the baseline;
- `platform interceptor only`: the kit's `PlatformInterceptor` (access,
  request context with the caller's trace context, string rules, RED metrics,
  access log) on a plain `grpc.aio.server()`;
- `kit, no exporter`: `create_server` as every process runs it without
  `OTEL_EXPORTER_OTLP_ENDPOINT`: the platform interceptor alone (health and
  reflection beside the service), no span;
- `kit, unsampled spans`: OpenTelemetry's server interceptor under a provider
  that samples nothing (how every process ran without an exporter before the
  kit left the span out);
- `kit, spans recorded, no exporter`: every span recorded and dropped (the
  price of recording alone);
- `kit, exporting to OTLP`: `tracing.configure` with an endpoint, spans batched
  to `tools.otlp_receiver` (its own process; its CPU is not counted).

`--client` measures the caller's side instead: one `bare grpc.aio` server, called
through a plain `grpc.aio.insecure_channel` and through the kit's
`grpc_client.dial` (request id, trace context, deadline, a client span and the
client metrics per call), this process's CPU per call (every thread, from
getrusage), best of `--repeat` interleaved runs.

Log lines go nowhere (level WARNING), as the metric and span costs are the
subject here. Prints the machine, the settings, and per row the calls per
second, the median and p99 latency and the server's CPU per call, best of
`--repeat` interleaved runs, with its ratio to the bare server's. `--json`
prints the raw numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

VARIANTS = {
    "bare": "bare grpc.aio",
    "platform": "platform interceptor only",
    "kit": "kit, no exporter",
    "kit-unsampled": "kit, unsampled spans",
    "kit-recorded": "kit, spans recorded, no exporter",
    "kit-exporting": "kit, exporting to OTLP",
}
METADATA = (("x-tenant-id", "bench"), ("x-request-id", "bench-request"))


class NoopProducts(product_pb2_grpc.ProductServiceServicer):
    """Answers GetProduct with the id it was asked for, and does nothing else."""

    async def GetProduct(
        self,
        request: product_pb2.GetProductRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> product_pb2.Product:
        return product_pb2.Product(id=request.id)


async def _serve(variant: str, endpoint: str) -> None:
    """One row's server: prints its port, serves until SIGTERM."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from services.kit import identity, logs, tracing
    from services.kit.interceptors import PlatformInterceptor
    from services.kit.server import Registration, create_server

    logs.configure("bench", "WARNING")
    servicer = NoopProducts()
    service = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name

    def add(server: grpc.aio.Server) -> None:
        product_pb2_grpc.add_ProductServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    if variant in ("bare", "platform"):
        interceptors = [PlatformInterceptor(identity.method_access([service]))]
        server = grpc.aio.server(interceptors=interceptors if variant == "platform" else None)
        add(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
    else:
        if variant == "kit":
            tracing.configure("bench", None)
        elif variant == "kit-exporting":
            tracing.configure("bench", endpoint)
        else:
            # As a process that exports, without an exporter: OpenTelemetry's server
            # interceptor, under a provider that samples nothing or records everything.
            sampler = ALWAYS_OFF if variant == "kit-unsampled" else tracing.RequestsOnly()
            trace.set_tracer_provider(TracerProvider(sampler=sampler))
            tracing._exporting = True
        server, port, _ = await create_server([Registration(service, add)])
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def _cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far, in ns (schedstat's first field)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@dataclass(frozen=True)
class Row:
    variant: str
    calls_per_s: float
    p50_us: float
    p99_us: float
    cpu_us_per_call: float  # the server's
    client_cpu_us_per_call: float  # this process's, every thread


async def _drive(
    port: int, pid: int, calls: int, warmup: int, concurrency: int, client: str = "plain"
) -> Row:
    """The calls over one channel (`client`: a plain grpc.aio one, or the kit's `dial`),
    timed, with the server's CPU and this process's around them."""
    from bench.load import own_cpu_s  # the client's side only: servers import no launcher
    from services.kit import grpc_client

    target = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(target) if client == "plain" else grpc_client.dial(target)
    async with channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]
        request = product_pb2.GetProductRequest(id="p-1")
        latencies: list[int] = []

        async def caller(count: int, record: bool) -> None:
            for _ in range(count):
                started = time.perf_counter_ns()
                await stub.GetProduct(request, metadata=METADATA, timeout=5)
                if record:
                    latencies.append(time.perf_counter_ns() - started)

        await asyncio.gather(*(caller(warmup // concurrency, False) for _ in range(concurrency)))
        cpu_before, own_before, wall_before = _cpu_ns(pid), own_cpu_s(), time.perf_counter()
        await asyncio.gather(*(caller(calls // concurrency, True) for _ in range(concurrency)))
        cpu, wall = _cpu_ns(pid) - cpu_before, time.perf_counter() - wall_before
        own = own_cpu_s() - own_before
    latencies.sort()
    done = len(latencies)
    return Row(
        "",
        calls_per_s=done / wall,
        p50_us=statistics.median(latencies) / 1000,
        p99_us=latencies[int(done * 0.99)] / 1000,
        cpu_us_per_call=cpu / done / 1000,
        client_cpu_us_per_call=own / done * 1e6,
    )


@contextmanager
def _serving(variant: str, endpoint: str = "") -> Iterator[tuple[int, int]]:
    """A server process of the row's variant: its port and pid, stopped afterwards."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.kit_call", "--serve", variant, "--endpoint", endpoint],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        yield int(server.stdout.readline()), server.pid
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _measure(variant: str, endpoint: str, calls: int, warmup: int, concurrency: int) -> Row:
    with _serving(variant, endpoint) as (port, pid):
        row = asyncio.run(_drive(port, pid, calls, warmup, concurrency))
    return replace(row, variant=variant)


CLIENTS = {"plain": "plain grpc.aio channel", "kit": "kit channel (grpc_client.dial)"}


def _client_table(calls: int, warmup: int, concurrency: int, repeat: int) -> None:
    import uvloop

    best: dict[str, Row] = {}
    with _serving("bare") as (port, pid):
        for _ in range(repeat):
            for kind in CLIENTS:
                row = uvloop.run(_drive(port, pid, calls, warmup, concurrency, client=kind))
                kept = best.get(kind)
                if kept is None or row.client_cpu_us_per_call < kept.client_cpu_us_per_call:
                    best[kind] = row
    print(f"{time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}, grpcio {grpc.__version__}; uvloop")  # fmt: skip
    print(
        f"{calls} unary calls per run to a bare grpc.aio server, {concurrency} in flight, "
        f"after {warmup} warm-up; best of {repeat} by client CPU"
    )
    print(f"{'client':<34} {'calls/s':>8} {'CPU us/call':>12}")
    for kind, label in CLIENTS.items():
        row = best[kind]
        print(f"{label:<34} {row.calls_per_s:8.0f} {row.client_cpu_us_per_call:12.1f}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--warmup", type=int, default=800)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--rows", default=",".join(VARIANTS), help=f"which rows, of {','.join(VARIANTS)}"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--client", action="store_true", help="measure the caller's side")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.endpoint))
        return
    if args.client:
        _client_table(args.calls, args.warmup, args.concurrency, args.repeat)
        return

    rows = ["bare", *(r for r in args.rows.split(",") if r != "bare")]
    unknown = set(rows) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}")
    with tempfile.TemporaryDirectory() as scratch:
        receiver_port = _free_port()
        receiver = subprocess.Popen(
            [sys.executable, "-m", "tools.otlp_receiver", "--port", str(receiver_port),
             "--out", os.path.join(scratch, "spans.jsonl")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert receiver.stdout is not None
            receiver.stdout.readline()  # receiving
            endpoint = f"http://127.0.0.1:{receiver_port}"
            best: dict[str, Row] = {}
            # Rounds interleave the rows, so a slow moment of the machine hits them all.
            for _ in range(args.repeat):
                for variant in rows:
                    row = _measure(variant, endpoint, args.calls, args.warmup, args.concurrency)
                    kept = best.get(variant)
                    if kept is None or row.cpu_us_per_call < kept.cpu_us_per_call:
                        best[variant] = row
            spans = Path(scratch, "spans.jsonl")
            exported = len(spans.read_text().splitlines()) if spans.exists() else 0
        finally:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(timeout=30)

    if args.json:
        print(json.dumps([asdict(r) for r in best.values()], indent=2))
        return
    base = best["bare"]
    print(f"{time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}, grpcio {grpc.__version__}")  # fmt: skip
    print(
        f"{args.calls} unary calls per run, {args.concurrency} in flight, after "
        f"{args.warmup} warm-up; best of {args.repeat} by server CPU; "
        f"spans received by the OTLP receiver: {exported}"
    )
    print(
        f"{'server':<34} {'calls/s':>8} {'p50 us':>8} {'p99 us':>8} "
        f"{'CPU us/call':>12} {'CPU vs bare':>12}"
    )
    for variant in rows:
        label, row = VARIANTS[variant], best[variant]
        ratio = row.cpu_us_per_call / base.cpu_us_per_call
        print(
            f"{label:<34} {row.calls_per_s:8.0f} {row.p50_us:8.0f} {row.p99_us:8.0f} "
            f"{row.cpu_us_per_call:12.1f} {ratio:11.2f}x"
        )


if __name__ == "__main__":
    main()
