"""Tracing's packages: the OTLP exporter loads with the protos it was built for."""

from __future__ import annotations

import re
from pathlib import Path

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
        assert "--force-reinstall" in text and "opentelemetry-proto==" in text, installer
