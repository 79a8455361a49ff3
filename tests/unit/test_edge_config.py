"""Every edge config the platform renders is accepted by the real Envoy (validate mode)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from services import topology
from services.launcher import certs, compose, edge, edge_routes, infra

LOCAL = edge.EdgeSettings(
    edge_address="127.0.0.1",
    edge_port=18080,
    admin_address="127.0.0.1",
    admin_port=19901,
    upstreams={
        name: edge_routes.Endpoint("127.0.0.1", topology.by_name(name).port.default)
        for name in topology.clusters()
    },
)


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Service certificates as `./shop up` issues them (Envoy loads the files it names)."""
    directory = tmp_path_factory.mktemp("tls")
    certs.issue(directory, [certs.EDGE], days=1)
    return directory


@pytest.mark.parametrize("variant", ["local", "local-with-tracing", "local-mtls", "compose"])
def test_envoy_validates_the_rendered_config(
    tmp_path: Path, identities: Path, variant: str
) -> None:
    settings = {
        "local": LOCAL,
        "local-with-tracing": dataclasses.replace(LOCAL, otlp_endpoint="http://127.0.0.1:4317"),
        "local-mtls": dataclasses.replace(LOCAL, upstream_tls=certs.files(identities, certs.EDGE)),
        # The compose config with the repo's files in place of the container's mount
        # paths; the STRICT_DNS host `order` is resolved only at run time.
        "compose": compose.settings_here(tls_dir=identities),
    }[variant]
    rendered = edge.render(settings)
    assert ("envoy.transport_sockets.tls" in rendered) is (settings.upstream_tls is not None)
    assert ("envoy.tracers.opentelemetry" in rendered) is (settings.otlp_endpoint is not None)
    config = tmp_path / "envoy.yaml"
    config.write_text(rendered)
    result = subprocess.run(
        [infra.executable("envoy"), "--mode", "validate", "-c", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"configuration '{config}' OK" in result.stdout + result.stderr
