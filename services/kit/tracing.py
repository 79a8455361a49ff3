"""OpenTelemetry tracing for servers, workers and clients, exported where config says.

With an OTLP endpoint spans are batched to it. Without one, spans are not
recorded (nothing would read them, and recording an aborted call's exception
cost more CPU than answering it), but trace context still propagates and log
lines still carry the trace and span ids.

The spans of one request, as the kit makes them (docs/ARCHITECTURE.md, "Traces"):
gRPC server spans (OpenTelemetry's interceptor, in `services.kit.server`), gRPC
client spans (`services.kit.grpc_client`), upstream HTTP spans
(`services.kit.upstream`), PostgreSQL statement spans (every engine of
`services.kit.db`), Redis command spans (every client of
`services.kit.redis_client`), MongoDB command spans (every client of
`services.kit.mongo`), the relay's producer spans and the queue kit's consumer
spans. The database and Redis hooks are attached only while spans are exported,
so without an exporter they cost nothing at all.

Only requests start traces: a database, Redis or MongoDB call outside any span
(a worker's poll of its stream, the relay's look for rows, a sweep) would be a
trace of its own every few hundred milliseconds, so a CLIENT span without a
parent is not recorded. Every other span follows its parent's decision.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    DEFAULT_ON,
    Decision,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

_exporting = False
_ids = RandomIdGenerator()


class RequestsOnly(Sampler):
    """Parent-based (a new root is sampled), except that a CLIENT span without a parent
    is dropped: a call outside any request or message is housekeeping."""

    def __init__(self, delegate: Sampler = DEFAULT_ON) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RequestsOnly{{{self._delegate.get_description()}}}"


def configure(service: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install the process-wide tracer provider for `service`."""
    global _exporting
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=RequestsOnly() if otlp_endpoint else ALWAYS_OFF,
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _exporting = bool(otlp_endpoint)
    return provider


def exporting() -> bool:
    """Whether this process exports spans: the kit's client factories attach their
    span hooks (PostgreSQL, Redis, MongoDB) only then."""
    return _exporting


def unrecorded_span(traceparent: str) -> Context:
    """A context whose current span is not recorded, with ids of its own: a child of
    `traceparent`, or the root of a new trace for '' (as an unsampled span has)."""
    parent = trace.INVALID_SPAN_CONTEXT
    if traceparent:
        extracted = propagate.extract({"traceparent": traceparent})
        parent = trace.get_current_span(extracted).get_span_context()
    trace_id = parent.trace_id if parent.is_valid else _ids.generate_trace_id()
    own = trace.SpanContext(trace_id, _ids.generate_span_id(), is_remote=False)
    return trace.set_span_in_context(trace.NonRecordingSpan(own))


def current_ids() -> tuple[str, str]:
    """The active span's trace id (32 hex digits) and span id (16), or ('', '')."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return "", ""
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
