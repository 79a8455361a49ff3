"""OpenTelemetry tracing for servers and clients, exported where config says.

With an OTLP endpoint spans are batched to it. Without one, spans are not
recorded (nothing would read them, and recording an aborted call's exception
cost more CPU than answering it), but trace context still propagates and log
lines still carry the trace id.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON


def configure(service: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install the process-wide tracer provider for `service`."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=DEFAULT_ON if otlp_endpoint else ALWAYS_OFF,
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def current_trace_id() -> str:
    """The active span's trace id as 32 hex digits, or '' outside a span."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""
