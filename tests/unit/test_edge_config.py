"""The rendered edge config is accepted by the real Envoy, with and without tracing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.launcher import edge
from services.launcher.platform import ROOT


@pytest.mark.parametrize("otlp_endpoint", [None, "http://127.0.0.1:4317"])
def test_envoy_validates_the_rendered_config(tmp_path: Path, otlp_endpoint: str | None) -> None:
    settings = edge.EdgeSettings(
        edge_address="127.0.0.1",
        edge_port=18080,
        admin_address="127.0.0.1",
        admin_port=19901,
        order_host="127.0.0.1",
        order_port=50051,
        descriptor_path=str(ROOT / "gen" / "descriptor.binpb"),
        lua_path=str(ROOT / "envoy" / "edge.lua"),
        otlp_endpoint=otlp_endpoint,
    )
    rendered = edge.render(ROOT / "envoy" / "edge.yaml", settings)
    assert ("envoy.tracers.opentelemetry" in rendered) is (otlp_endpoint is not None)
    config = tmp_path / "envoy.yaml"
    config.write_text(rendered)
    envoy = Path(sys.executable).parent / "envoy"
    result = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
