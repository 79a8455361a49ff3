"""A tiny OTLP/gRPC trace receiver: collects the spans that processes export to it.

    PYTHONPATH=.:gen .venv/bin/python -m tools.otlp_receiver --port 4317 --out spans.jsonl

It answers the OpenTelemetry collector's `TraceService.Export` and keeps every
span as a `Span` (trace id, span id, parent, name, kind, the exporting
service, attributes, links). Run as a program, it appends each span to
`--out` as one JSON object per line, for `./shop up --observability` when no
collector or Jaeger is installed; tests start a `Receiver` in-process and read
`spans`. It stores and shows nothing else: a real collector is what a
production platform points `OTEL_EXPORTER_OTLP_ENDPOINT` at.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

KINDS = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: "internal",
    trace_pb2.Span.SPAN_KIND_SERVER: "server",
    trace_pb2.Span.SPAN_KIND_CLIENT: "client",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "producer",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "consumer",
}


@dataclass(frozen=True)
class Span:
    """One received span; ids as lowercase hex, `parent_id` '' for a root."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    # (trace id, span id) of each linked span.
    links: tuple[tuple[str, str], ...] = ()
    start_ns: int = 0
    end_ns: int = 0
    error: bool = False


def _value(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which) if which else None


def _attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> list[Span]:
    """The spans of one export request, each with its resource's `service.name`."""
    found = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                found.append(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=KINDS.get(span.kind, "unspecified"),
                        service=service,
                        attributes=_attributes(span.attributes),
                        links=tuple(
                            (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                        ),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        error=span.status.code == trace_pb2.Status.STATUS_CODE_ERROR,
                    )
                )
    return found


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Callable[[list[Span]], None]) -> None:
        self._sink = sink

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._sink(spans_of(request))
        return trace_service_pb2.ExportTraceServiceResponse()


class Receiver:
    """An OTLP/gRPC trace receiver on `host:port` (0: a free one), in threads of its own."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, out: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._out = out
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self._keep), self._server
        )
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.endpoint = f"http://{host}:{self.port}"

    def _keep(self, spans: list[Span]) -> None:
        with self._lock:
            if self._out is None:
                self._spans.extend(spans)
                return
            with self._out.open("a") as out:
                for span in spans:
                    out.write(json.dumps(asdict(span)) + "\n")

    @property
    def spans(self) -> list[Span]:
        """Every span received so far (kept in memory when there is no `out` file)."""
        with self._lock:
            return list(self._spans)

    def wait_for(self, done: Callable[[list[Span]], bool], timeout_s: float = 10.0) -> list[Span]:
        """The spans once `done(spans)` holds; AssertionError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({f"{s.service}: {s.name}" for s in spans})
                raise AssertionError(f"spans not received in {timeout_s}s; got {names}")
            time.sleep(0.05)

    def start(self) -> Receiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.otlp_receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4317)
    parser.add_argument("--out", type=Path, required=True, help="append spans here, one a line")
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Receiver(args.host, args.port, args.out) as receiver:
        print(json.dumps({"msg": "receiving", "endpoint": receiver.endpoint}), flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
