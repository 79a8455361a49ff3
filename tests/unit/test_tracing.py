"""Tracing: which spans are recorded, where the kit hooks them in, and that the OTLP
exporter loads with the protos it was built for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision

from services.kit import db, server, tracing
from services.kit.mongo import CommandSpans, create_mongo
from services.kit.redis_client import create_redis

ROOT = Path(__file__).resolve().parents[2]


def test_the_otlp_exporter_imports_with_current_protos() -> None:
    # xds-protos ships old copies of these modules into the same package; installed
    # after opentelemetry-proto, they break every process that exports spans.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.common.v1 import common_pb2

    assert OTLPSpanExporter
    assert hasattr(common_pb2, "InstrumentationScope")


def test_every_install_puts_the_pinned_protos_back_last() -> None:
    pin = re.search(r'"(opentelemetry-proto==[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin, "pyproject.toml pins opentelemetry-proto"
    for installer in ("shop", "Dockerfile"):
        text = (ROOT / installer).read_text()
        assert "--force-reinstall" in text, installer
        assert "opentelemetry-proto==" in text, installer


def test_a_client_span_outside_any_request_is_not_recorded_and_others_follow_parents() -> None:
    sampler = tracing.RequestsOnly()
    root = trace.set_span_in_context(trace.INVALID_SPAN)
    sampled = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(
                1, 2, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
            )
        )
    )
    unsampled = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(0))
        )
    )

    def decision(parent: Context, kind: trace.SpanKind) -> Decision:
        return sampler.should_sample(parent, 1, "span", kind).decision

    # A poll, a sweep: database or Redis calls outside any request.
    assert decision(root, trace.SpanKind.CLIENT) is Decision.DROP
    # A request or a message starts a trace; calls inside one follow it.
    assert decision(root, trace.SpanKind.SERVER) is Decision.RECORD_AND_SAMPLE
    assert decision(root, trace.SpanKind.INTERNAL) is Decision.RECORD_AND_SAMPLE
    assert decision(sampled, trace.SpanKind.CLIENT) is Decision.RECORD_AND_SAMPLE
    assert decision(unsampled, trace.SpanKind.CLIENT) is Decision.DROP


@pytest.mark.parametrize("exporting", [False, True])
def test_client_span_hooks_are_attached_only_while_spans_are_exported(
    monkeypatch: pytest.MonkeyPatch, exporting: bool
) -> None:
    # Without an exporter the provider samples nothing; the hooks would still cost
    # their calls, so the factories leave them out.
    monkeypatch.setattr(tracing, "_exporting", exporting)
    engine = db.create_engine("postgresql://shop:secret@127.0.0.1:1/shop")
    hooks = len(engine.sync_engine.dispatch.before_cursor_execute)
    client = create_redis("redis://127.0.0.1:1/0")
    mongo = create_mongo("mongodb://127.0.0.1:1/shop", connect=False)
    listeners = mongo.options.event_listeners
    assert (hooks > 0) is exporting
    assert bool(getattr(client, "_is_instrumented_by_opentelemetry", False)) is exporting
    assert any(isinstance(x, CommandSpans) for x in listeners) is exporting


@pytest.mark.parametrize("exporting", [False, True])
def test_the_server_adds_opentelemetry_interceptor_only_while_exporting(
    monkeypatch: pytest.MonkeyPatch, exporting: bool
) -> None:
    # Without an exporter the platform interceptor alone carries the caller's trace
    # context (services/kit/interceptors.py): no second pass over the metadata.
    monkeypatch.setattr(tracing, "_exporting", exporting)
    assert len(server._server_spans()) == int(exporting)
