"""A webhook that the event gateway cannot queue (its Redis is down) reaches the sender,
through Envoy, as a 503 JSON error it can retry on.

The gateway and the Envoy in front of it are this test's own; the rest of the edge's
upstreams are the session platform's.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from services.launcher import infra, procs
from services.launcher.platform import State
from stubs.shipments import shipment_id
from tests.e2e.conftest import assert_error
from tests.edges import running_edge, running_service
from tests.webhooks import COURIER, SOURCES, status_event

pytestmark = pytest.mark.e2e


def test_ingestion_answers_503_when_redis_is_down(platform: State, tmp_path: Path) -> None:
    dead_redis = f"redis://{infra.HOST}:{procs.free_port()}/0"
    env = {"REDIS_URL": dead_redis, "EVENT_REDIS_TIMEOUT_S": "0.5", "WEBHOOK_SOURCES": SOURCES,
           "CURSOR_SECRET": "e2e-test-cursor-secret"}  # fmt: skip
    with (
        running_service("event", tmp_path, env, platform) as target,
        running_edge(platform, tmp_path / "edge", event=target) as edge,
        httpx.Client(base_url=edge.rest_url) as http,
    ):
        response = COURIER.deliver(http, status_event(shipment_id(396)))
    assert_error(response, 503, "unavailable")
