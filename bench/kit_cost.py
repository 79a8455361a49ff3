"""What the kit adds to one unary call, in process: the interceptors, the access
log, the metrics and the error mapping around a no-op handler, without the transport.

    PYTHONPATH=.:gen .venv/bin/python -m bench.kit_cost [--calls 20000] [--repeat 5]

gRPC's own cost per call (C core, HTTP/2, the poller thread) is the same with or
without the kit, and on a shared machine it is noisy enough to hide the kit's
part (`bench/kit_call.py` measures the whole call over a real channel). Here the
handlers are called the way grpc.aio calls them, through the server's
interceptor chain (`intercept_service`, then the returned handler's behaviour),
with a servicer context that answers at once, on uvloop, one call at a time.
Rows:

- `handler alone`: the no-op handler called directly, the baseline;
- `platform interceptor, log WARNING`: access, context, string rules, metrics
  and error mapping (the access log below its level);
- `platform interceptor, log INFO`: the same with the access log on, one JSON
  line per call written to a file, as every process runs in production;
- `+ OpenTelemetry, no exporter`: the server's whole chain as `create_server`
  builds it, tracing configured without an endpoint (spans not recorded);
- `an error mapped (NOT_FOUND), log INFO`: the handler raises a PlatformError,
  which becomes a rich status.

Per row: CPU microseconds per call of the whole process (the log writer thread
included) and of the event-loop thread alone (what other calls wait for), best
of `--repeat` runs; `--json` prints the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import grpc
import uvloop
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from shop.product.v1 import product_pb2

from services.kit import errors, logs, tracing
from services.kit.interceptors import PlatformInterceptor

METHOD = "/shop.product.v1.ProductService/GetProduct"


class Metadatum(NamedTuple):
    """One metadata entry as grpc.aio hands it over (a pair with names)."""

    key: str
    value: str


METADATA = tuple(
    Metadatum(k, v)
    for k, v in (
        ("x-request-id", "bench-request"),
        ("x-tenant-id", "demo"),
        ("x-user-id", "u-1"),
        ("x-user-role", "customer"),
        ("user-agent", "grpc-python"),
    )
)


class Context:
    """A servicer context whose calls return at once (no transport behind it)."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return METADATA

    def time_remaining(self) -> float:
        return 5.0

    async def send_initial_metadata(self, metadata: Any) -> None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailers: Any = ()) -> None:
        self._code = code
        raise grpc.aio.AbortError()

    def code(self) -> grpc.StatusCode:
        return self._code

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        return None


class Details:
    """HandlerCallDetails as the server passes them to intercept_service."""

    method = METHOD
    invocation_metadata = METADATA


async def ok(request: product_pb2.GetProductRequest, ctx: Any) -> product_pb2.Product:
    return product_pb2.Product(id=request.id)


async def not_found(request: product_pb2.GetProductRequest, ctx: Any) -> product_pb2.Product:
    raise errors.NotFound(f"product {request.id} not found")


@dataclass(frozen=True)
class Row:
    label: str
    cpu_us: float  # the whole process, per call
    loop_us: float  # the event-loop thread, per call


def _chain(interceptors: Sequence[Any], behavior: Callable[..., Awaitable[Any]]) -> Any:
    """What the server does per call: ask the chain for the handler, outermost first."""
    handler = grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=product_pb2.GetProductRequest.FromString,
        response_serializer=product_pb2.Product.SerializeToString,
    )

    async def found(details: Any) -> Any:
        return handler

    continuation: Callable[[Any], Awaitable[Any]] = found
    for interceptor in reversed(interceptors):
        continuation = _bind(interceptor, continuation)
    return continuation


def _bind(interceptor: Any, inner: Callable[[Any], Awaitable[Any]]) -> Any:
    async def next_(details: Any) -> Any:
        return await interceptor.intercept_service(inner, details)

    return next_


async def _calls(chain: Any, calls: int) -> None:
    request, ctx = product_pb2.GetProductRequest(id="p-1"), Context()
    for _ in range(calls):
        handler = await chain(Details())
        try:
            response = await handler.unary_unary(request, ctx)
            handler.response_serializer(response)
        except grpc.aio.AbortError:
            pass


def _run(chain: Any, calls: int) -> tuple[float, float]:
    """CPU seconds of the process and of this thread for `calls` calls."""

    async def measured() -> tuple[float, float]:
        await _calls(chain, min(calls // 10, 2000))  # warm-up: first-call work, caches
        process, thread = time.process_time(), time.thread_time()
        await _calls(chain, calls)
        loop_s = time.thread_time() - thread
        getattr(logs, "_flush", lambda: None)()  # the writer thread finishes the lines it was given
        return time.process_time() - process, loop_s

    return uvloop.run(measured())


def measure(calls: int, repeat: int, log_file: str) -> list[Row]:
    platform_only = [PlatformInterceptor({})]
    rows = {
        "handler alone": ("WARNING", [], ok),
        "platform interceptor, log WARNING": ("WARNING", platform_only, ok),
        "platform interceptor, log INFO": ("INFO", platform_only, ok),
        "+ OpenTelemetry, no exporter, log INFO": ("INFO", None, ok),
        "an error mapped (NOT_FOUND), log INFO": ("INFO", None, not_found),
    }
    best: dict[str, tuple[float, float]] = {}
    stdout = sys.stdout
    with open(log_file, "a") as sink:
        try:
            sys.stdout = sink  # logs.configure writes to the stdout of the moment
            tracing.configure("bench", None)
            for _ in range(repeat):  # rounds interleave the rows: a slow moment hits them all
                for label, (level, chain, behavior) in rows.items():
                    logs.configure("bench", level)
                    # None: the chain create_server builds (OpenTelemetry's first).
                    otel = aio_server_interceptor()  # type: ignore[no-untyped-call]
                    interceptors = chain if chain is not None else [otel, *platform_only]
                    cpu, loop = _run(_chain(interceptors, behavior), calls)
                    kept = best.get(label)
                    if kept is None or cpu < kept[0]:
                        best[label] = (cpu, loop)
        finally:
            getattr(logs, "_flush", lambda: None)()
            sys.stdout = stdout
            logging.getLogger().handlers.clear()
    return [
        Row(label, cpu * 1e6 / calls, loop * 1e6 / calls) for label, (cpu, loop) in best.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kit_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=20000, help="calls per run (20000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row, best kept (5)")
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        log_file = os.path.join(scratch, "access.log")
        rows = measure(args.calls, args.repeat, log_file)
        with open(log_file) as written:
            lines = sum(1 for _ in written)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    base = rows[0].cpu_us
    print("What the kit adds to one unary call, in process (bench/kit_cost.py)")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, "
        f"{os.cpu_count()} cores; Python {platform.python_version()}, grpcio {grpc.__version__}"
    )
    print(
        f"{args.calls:,} calls per run, one at a time on uvloop, best of {args.repeat}; "
        f"access-log lines written: {lines:,}"
    )
    print(f"{'':<42}{'CPU us/call':>12}{'loop us/call':>14}{'kit us/call':>13}")
    for row in rows:
        print(f"{row.label:<42}{row.cpu_us:>12.1f}{row.loop_us:>14.1f}{row.cpu_us - base:>13.1f}")
    print("  CPU: the whole process (the log writer thread too); loop: the event-loop thread;")
    print("  kit: CPU over the handler alone's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
