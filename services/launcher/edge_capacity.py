"""How much one Envoy takes on before it sheds load: timeouts, connection limits, heap.

Without these a client that sends headers and then trickles (or never sends) a
body holds a connection and up to 1 MiB of buffer for as long as it likes:
450 such uploads took Envoy from 306 to 575 MB. The numbers are settings
(EDGE_... in .env.example) rendered into envoy/edge.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.kit.config import env_int

# Request headers Envoy accepts (431 above), and how many. The services' gRPC
# metadata limit must hold the most a request can then carry: the headers, the
# 32 bytes gRPC counts per entry, and what Envoy adds (identity, x-envoy-*,
# x-forwarded-*, request id), or a large request gets the services' own refusal
# (RESOURCE_EXHAUSTED, which the edge would show as a 429).
MAX_REQUEST_HEADERS_KB = 32
MAX_HEADERS_COUNT = 100
ENVOY_ADDED_BYTES = 4096
# (tests/unit/test_edge_capacity.py checks it against services/kit/server.py.)

HEAP_MONITOR = "envoy.resource_monitors.fixed_heap"
CONNECTION_MONITOR = "envoy.resource_monitors.global_downstream_max_connections"


@dataclass(frozen=True)
class EdgeCapacity:
    """One Envoy's timeouts and limits (seconds, counts, MiB)."""

    # From accepting a connection (or opening a stream) to the last request header.
    request_headers_timeout_s: int = 10
    # From the first byte to the last of a request: a 1 MiB upload at 64 KiB/s
    # fits; the route timeouts (the product gateway's budgets) start after it.
    request_timeout_s: int = 30
    # No byte either way on a stream for this long: above every route timeout.
    stream_idle_timeout_s: int = 60
    # A connection is drained after this many requests (HTTP/1.1 keep-alive and
    # HTTP/2 streams alike), so no client keeps one connection forever.
    max_requests_per_connection: int = 10000
    # HTTP/2 streams open at once on one connection (Envoy's default is 2^31-1).
    max_concurrent_streams: int = 100
    # Client connections open at once, over every listener (the admin port aside).
    max_connections: int = 4096
    # The heap the overload manager measures against: past 90% Envoy shrinks its
    # heap and resets the streams holding the most buffer, past 95% it stops
    # accepting connections and answers new requests 503.
    max_heap_mb: int = 512

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EdgeCapacity:
        defaults = cls()
        return cls(
            request_headers_timeout_s=env_int(
                env, "EDGE_REQUEST_HEADERS_TIMEOUT_S", defaults.request_headers_timeout_s
            ),
            request_timeout_s=env_int(env, "EDGE_REQUEST_TIMEOUT_S", defaults.request_timeout_s),
            stream_idle_timeout_s=env_int(
                env, "EDGE_STREAM_IDLE_TIMEOUT_S", defaults.stream_idle_timeout_s
            ),
            max_requests_per_connection=env_int(
                env, "EDGE_MAX_REQUESTS_PER_CONNECTION", defaults.max_requests_per_connection
            ),
            max_concurrent_streams=env_int(
                env, "EDGE_MAX_CONCURRENT_STREAMS", defaults.max_concurrent_streams
            ),
            max_connections=env_int(env, "EDGE_MAX_CONNECTIONS", defaults.max_connections),
            max_heap_mb=env_int(env, "EDGE_MAX_HEAP_MB", defaults.max_heap_mb),
        )


def _threshold(action: str, value: float) -> dict[str, Any]:
    return {
        "name": f"envoy.overload_actions.{action}",
        "triggers": [{"name": HEAP_MONITOR, "threshold": {"value": value}}],
    }


def overload_manager(capacity: EdgeCapacity) -> dict[str, Any]:
    """The bootstrap's overload manager: heap pressure and the global connection cap."""
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": HEAP_MONITOR,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": capacity.max_heap_mb * 1024 * 1024,
                },
            },
            {
                "name": CONNECTION_MONITOR,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": capacity.max_connections,
                },
            },
        ],
        "actions": [
            _threshold("shrink_heap", 0.90),
            # Unfinished uploads are what fills the heap: reset the streams that
            # buffer the most first (accounts from 1 MiB, see buffer_factory_config).
            {
                "name": "envoy.overload_actions.reset_high_memory_stream",
                "triggers": [
                    {
                        "name": HEAP_MONITOR,
                        "scaled": {"scaling_threshold": 0.90, "saturation_threshold": 0.98},
                    }
                ],
            },
            _threshold("stop_accepting_connections", 0.95),
            _threshold("stop_accepting_requests", 0.95),
        ],
        # Streams that buffer 2^20 bytes (1 MiB) or more are tracked for the reset action.
        "buffer_factory_config": {"minimum_account_to_track_power_of_two": 20},
    }


def _seconds(value: int) -> str:
    return f"{value}s"


def placeholders(capacity: EdgeCapacity) -> dict[str, str]:
    """The template's values for the http_connection_manager and the bootstrap."""
    common = {
        "idle_timeout": "300s",
        "max_requests_per_connection": capacity.max_requests_per_connection,
        "max_headers_count": MAX_HEADERS_COUNT,
    }
    return {
        "MAX_REQUEST_HEADERS_KB": str(MAX_REQUEST_HEADERS_KB),
        "REQUEST_HEADERS_TIMEOUT": _seconds(capacity.request_headers_timeout_s),
        "REQUEST_TIMEOUT": _seconds(capacity.request_timeout_s),
        "STREAM_IDLE_TIMEOUT": _seconds(capacity.stream_idle_timeout_s),
        "COMMON_HTTP_PROTOCOL_OPTIONS": json.dumps(common),
        "HTTP2_PROTOCOL_OPTIONS": json.dumps(
            {"max_concurrent_streams": capacity.max_concurrent_streams}
        ),
        "OVERLOAD_MANAGER": json.dumps(overload_manager(capacity)),
    }
