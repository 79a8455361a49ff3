"""The edge's capacity settings: read from the environment, rendered, and in step with
the services' gRPC metadata limit."""

from __future__ import annotations

import yaml

from services.kit import server
from services.launcher import compose, edge_capacity
from services.launcher.edge_capacity import EdgeCapacity


def test_the_services_accept_every_request_the_edge_lets_through() -> None:
    most = (
        edge_capacity.MAX_REQUEST_HEADERS_KB * 1024
        + edge_capacity.MAX_HEADERS_COUNT * 32  # gRPC's per-entry overhead
        + edge_capacity.ENVOY_ADDED_BYTES
    )
    assert most <= server.MAX_METADATA_BYTES


def test_settings_come_from_edge_variables() -> None:
    env = {"EDGE_REQUEST_TIMEOUT_S": "7", "EDGE_MAX_CONNECTIONS": "12", "EDGE_MAX_HEAP_MB": "64"}
    capacity = EdgeCapacity.from_env(env)
    assert (capacity.request_timeout_s, capacity.max_connections, capacity.max_heap_mb) == (
        7,
        12,
        64,
    )
    assert EdgeCapacity.from_env({}) == EdgeCapacity()


def test_the_rendered_config_carries_the_numbers() -> None:
    config = yaml.safe_load(compose.render_compose_edge())
    defaults = EdgeCapacity()
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    options = hcm["typed_config"]
    assert options["request_headers_timeout"] == f"{defaults.request_headers_timeout_s}s"
    assert options["request_timeout"] == f"{defaults.request_timeout_s}s"
    assert options["max_request_headers_kb"] == edge_capacity.MAX_REQUEST_HEADERS_KB
    common = options["common_http_protocol_options"]
    assert common["max_requests_per_connection"] == defaults.max_requests_per_connection
    monitors = {
        m["name"]: m["typed_config"] for m in config["overload_manager"]["resource_monitors"]
    }
    assert monitors[edge_capacity.CONNECTION_MONITOR]["max_active_downstream_connections"] == (
        defaults.max_connections
    )
    assert monitors[edge_capacity.HEAP_MONITOR]["max_heap_size_bytes"] == defaults.max_heap_mb << 20
