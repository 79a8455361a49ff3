"""Every edge config the platform renders is accepted by the real Envoy (validate mode)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from services import topology
from services.launcher import certs, compose, edge, edge_limits, edge_routes, infra
from services.launcher.edge_limits import EdgeLimits, Quota

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


def _filters(rendered: str) -> dict[str, dict[str, Any]]:
    listener = yaml.safe_load(rendered)["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return {f["name"]: f["typed_config"] for f in manager["http_filters"]}


def test_the_per_caller_quotas_are_shared_out_among_the_edges_own_envoys() -> None:
    limits = EdgeLimits(address=Quota(300), user=Quota(12, 3600), callers=777)
    rendered = yaml.safe_load(edge.render(dataclasses.replace(LOCAL, limits=limits)))
    assert rendered["cluster_manager"] == {"local_cluster_name": edge_limits.LOCAL_CLUSTER}
    local = next(
        c
        for c in rendered["static_resources"]["clusters"]
        if c["name"] == edge_limits.LOCAL_CLUSTER
    )
    hosts = [
        e["endpoint"]["address"]["socket_address"]
        for e in local["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert hosts == [{"address": "127.0.0.1", "port_value": 18080}]  # alone by default
    assert "health_checks" not in local

    filters = _filters(edge.render(dataclasses.replace(LOCAL, limits=limits)))
    user = filters["edge.user_limit"]
    assert user["local_cluster_rate_limit"] == {}
    assert user["max_dynamic_descriptors"] == 777
    assert user["descriptors"] == [
        {
            "entries": [{"key": "user"}],
            "token_bucket": {"max_tokens": 12, "tokens_per_fill": 12, "fill_interval": "3600s"},
        }
    ]
    assert user["rate_limits"][0]["actions"][0]["request_headers"]["header_name"] == "x-user-id"
    headers = {h["header"]["key"]: h["header"]["value"] for h in user["response_headers_to_add"]}
    assert headers == {
        "retry-after": "300",
        "ratelimit": '"user";r=0;t=300',
        "ratelimit-policy": '"user";q=12;w=3600',
    }
    address = filters["edge.address_limit"]
    assert address["descriptors"][0]["token_bucket"]["max_tokens"] == 300
    assert address["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    # Per address before any token is checked; per user once jwt_authn has set the header.
    order = list(filters)
    assert order.index("edge.address_limit") < order.index("envoy.filters.http.jwt_authn")
    assert order.index("envoy.filters.http.jwt_authn") < order.index("edge.user_limit")


def test_only_login_and_registration_ask_the_rate_limit_service() -> None:
    rendered = yaml.safe_load(edge.render(LOCAL))
    manager = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    host = manager["typed_config"]["route_config"]["virtual_hosts"][0]
    assert "rate_limits" not in host
    asking = sorted(
        r["match"]["path"]
        for r in host["routes"]
        if "envoy.filters.http.ratelimit" in r.get("typed_per_filter_config", {})
    )
    assert asking == sorted(edge_routes.CREDENTIAL_METHODS)


def test_the_compose_and_kubernetes_edge_lists_its_replicas_by_one_dns_name() -> None:
    assert compose.settings().local_cluster == (
        edge_routes.Endpoint("envoy-replicas", topology.by_name("envoy").port.default),
    )


@pytest.mark.parametrize(
    ("requests", "per_s", "retry"), [(50, 1, 1), (10, 3600, 360), (7, 60, 9), (1, 1, 1)]
)
def test_a_quota_tells_how_long_until_one_more_request(
    requests: int, per_s: int, retry: int
) -> None:
    assert Quota(requests, per_s).retry_after_s == retry


@pytest.mark.parametrize(("requests", "per_s"), [(0, 1), (5, 0), (-1, 1)])
def test_a_quota_needs_a_request_in_a_positive_window(requests: int, per_s: int) -> None:
    with pytest.raises(ValueError, match="quota"):
        Quota(requests, per_s)


def test_routes_name_the_success_a_service_leaves_to_the_edge() -> None:
    rendered = yaml.safe_load(edge.render(LOCAL))
    manager = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    host = manager["typed_config"]["route_config"]["virtual_hosts"][0]
    lua = {
        r["match"]["path"]: r["metadata"]["filter_metadata"]["envoy.filters.http.lua"]
        for r in host["routes"]
        if "path" in r["match"] and "metadata" in r
    }
    hit = {"success_headers": {"cache-status": "shop-products; hit"}}
    assert lua == {
        "/shop.event.v1.EventService/IngestWebhook": {"success_status": "202"},
        "/shop.event.v1.EventService/PublishEvent": {"success_status": "202"},
        "/shop.product.v1.ProductService/ListProducts": hit,
        "/shop.product.v1.ProductService/GetProduct": hit,
        "/shop.product.v1.ProductService/GetProductInventory": hit,
        "/shop.product.v2.ProductService/ListProducts": hit,
        "/shop.product.v2.ProductService/GetProduct": hit,
    }
    # A route of its own keeps the service's timeout and its local bucket.
    listing = next(
        r for r in host["routes"]
        if r["match"].get("path") == "/shop.product.v1.ProductService/ListProducts"
    )  # fmt: skip
    assert listing["route"] == {"cluster": "product", "timeout": "15s"}
    assert "envoy.filters.http.local_ratelimit" in listing["typed_per_filter_config"]
