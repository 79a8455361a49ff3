"""The edge config for live streams, checked offline: Server-Sent Events from the
transcoder, no route timeout on the two watch methods, keep-alives well inside the
stream idle timeout, and the live page public and locked to its own script."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import yaml

from services.inventory.config import InventoryConfig
from services.launcher import edge, edge_pages, edge_policy, edge_routes
from services.launcher.edge_capacity import EdgeCapacity
from services.launcher.edge_limits import EdgeLimits
from services.order.config import OrderConfig
from tests.unit.test_edge_config import LOCAL

WATCHES = (
    "/shop.order.v1.OrderService/WatchOrder",
    "/shop.inventory.v1.InventoryService/WatchStock",
)


def _http_manager() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(edge.render(LOCAL))
    listener = config["static_resources"]["listeners"][0]
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def test_the_transcoder_answers_streams_as_server_sent_events() -> None:
    manager = _http_manager()
    (transcoder,) = [
        f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    ]
    options = transcoder["typed_config"]["print_options"]
    assert options["stream_sse_style_delimited"] is True
    assert "stream_newline_delimited" not in options


def test_the_watch_routes_have_no_route_timeout_and_keep_alives_beat_the_idle_timeout() -> None:
    routes = {
        r["match"].get("path"): r["route"]["timeout"] for r in edge_routes.routes(EdgeLimits())
    }
    for path in WATCHES:
        assert routes[path] == "0s", path
    idle = EdgeCapacity().stream_idle_timeout_s
    for heartbeat in (
        OrderConfig.from_env(
            {
                "DATABASE_URL": "x",
                "CURSOR_SECRET": "x",
                "PRODUCT_GRPC_TARGET": "x",
                "INVENTORY_GRPC_TARGET": "x",
            }
        ).watch_heartbeat_s,
        InventoryConfig.from_env(
            {"DATABASE_URL": "x", "CURSOR_SECRET": "x", "ERP_URL": "x", "WAREHOUSE_URL": "x"}
        ).watch_heartbeat_s,
    ):
        assert heartbeat * 3 <= idle, "a keep-alive may miss the stream idle timeout"


def test_the_live_page_is_public_and_runs_only_its_own_script() -> None:
    (route,) = edge_pages.routes()
    pattern = route["match"]["safe_regex"]["regex"]
    assert re.fullmatch(pattern, "/orders/0b8c7f1e-0000-4000-8000-000000000001/live")
    assert not re.fullmatch(pattern, "/orders/a/b/live")
    assert not re.fullmatch(pattern, "/v1/orders/a/watch")
    rules = edge_policy.jwt_authn("i", "a", "http://127.0.0.1/jwks")["rules"]
    (public,) = [r for r in rules if r["match"].get("safe_regex", {}).get("regex") == pattern]
    assert "requires" not in public
    html = route["direct_response"]["body"]["inline_string"]
    assert html == edge_pages.LIVE_PAGE.read_text()
    assert "cdn" not in html.lower()
    assert "http://" not in html
    assert "https://" not in html
    headers = {h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]}
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in headers["content-security-policy"]
    assert "connect-src 'self'" in headers["content-security-policy"]
