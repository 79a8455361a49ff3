"""What the kit costs one unary RPC: a no-op `GetProduct` served by `create_server`.

    PYTHONPATH=.:gen .venv/bin/python -m bench.kit_call [--calls 4000] [--repeat 3]

Each row is a server process of its own (a process has one tracer provider),
answering the same no-op handler; this process calls it over a real channel,
one call at a time, and reads the server's CPU time (every thread of it, from
/proc) around the measured calls. The rows:

- `bare grpc.aio`: `grpc.aio.server()` without interceptors, the baseline;
- `kit, no tracer provider`: `create_server` (OpenTelemetry's and the
  platform's interceptors: access, context, string rules, metrics, access
  log) with the OpenTelemetry API's no-op default;
- `kit, tracing without exporter`: `tracing.configure` with no endpoint, as
  every process runs without `OTEL_EXPORTER_OTLP_ENDPOINT` (spans sampled off);
- `kit, spans recorded, no exporter`: every span recorded and dropped (the
  price of recording alone);
- `kit, exporting to OTLP`: `tracing.configure` with an endpoint, spans batched
  to `tools.otlp_receiver` (its own process; its CPU is not counted).

Log lines go nowhere (level WARNING), as the metric and span costs are the
subject here. Prints the machine, the settings, and per row the median and p99
latency and the server's CPU per call, best of `--repeat` runs, with its ratio
to the bare server's. `--json` prints the raw numbers.
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
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

VARIANTS = {
    "bare": "bare grpc.aio",
    "kit-noop": "kit, no tracer provider",
    "kit-unsampled": "kit, tracing without exporter",
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
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from services.kit import logs, tracing
    from services.kit.server import Registration, create_server

    logs.configure("bench", "WARNING")
    servicer = NoopProducts()

    def add(server: grpc.aio.Server) -> None:
        product_pb2_grpc.add_ProductServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    if variant == "bare":
        server = grpc.aio.server()
        add(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
    else:
        if variant == "kit-unsampled":
            tracing.configure("bench", None)
        elif variant == "kit-recorded":
            trace.set_tracer_provider(TracerProvider(sampler=ALWAYS_ON))
        elif variant == "kit-exporting":
            tracing.configure("bench", endpoint)
        service = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name
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
    p50_us: float
    p99_us: float
    cpu_us_per_call: float


def _measure(variant: str, endpoint: str, calls: int, warmup: int) -> Row:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.kit_call", "--serve", variant, "--endpoint", endpoint],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]
            request = product_pb2.GetProductRequest(id="p-1")
            for _ in range(warmup):
                stub.GetProduct(request, metadata=METADATA, timeout=5)
            latencies = []
            cpu_before = _cpu_ns(server.pid)
            for _ in range(calls):
                started = time.perf_counter_ns()
                stub.GetProduct(request, metadata=METADATA, timeout=5)
                latencies.append(time.perf_counter_ns() - started)
            cpu = _cpu_ns(server.pid) - cpu_before
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    latencies.sort()
    return Row(
        variant,
        p50_us=statistics.median(latencies) / 1000,
        p99_us=latencies[int(len(latencies) * 0.99)] / 1000,
        cpu_us_per_call=cpu / calls / 1000,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.endpoint))
        return

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
                for variant in VARIANTS:
                    row = _measure(variant, endpoint, args.calls, args.warmup)
                    kept = best.get(variant)
                    if kept is None or row.cpu_us_per_call < kept.cpu_us_per_call:
                        best[variant] = row
            exported = len(Path(scratch, "spans.jsonl").read_text().splitlines())
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
        f"{args.calls} sequential unary calls per run after {args.warmup} warm-up, "
        f"best of {args.repeat} by server CPU; spans received by the OTLP receiver: {exported}"
    )
    print(f"{'server':<34} {'p50 us':>8} {'p99 us':>8} {'CPU us/call':>12} {'CPU vs bare':>12}")
    for variant, label in VARIANTS.items():
        row = best[variant]
        ratio = row.cpu_us_per_call / base.cpu_us_per_call
        print(
            f"{label:<34} {row.p50_us:8.0f} {row.p99_us:8.0f} "
            f"{row.cpu_us_per_call:12.1f} {ratio:11.2f}x"
        )


if __name__ == "__main__":
    main()
