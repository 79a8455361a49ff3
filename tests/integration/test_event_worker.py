"""Event workers as real processes: killed mid-message, stopped while busy, racing each other.

Each test runs an event gateway and workers of its own on a queue of its own,
behind an Envoy of its own, so it can kill and stop them; Redis, MongoDB and
the Routing stub are the platform's.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pymongo import MongoClient
from pymongo.database import Database

from services.launcher import infra, procs
from services.launcher.platform import PYTHONPATH, State, start_service
from services.launcher.provision import seed_shipments
from stubs.shipments import shipment_id
from tests.edges import running_edge, running_service
from tests.upstream_admin import StubAdmin
from tests.webhooks import COURIER, eventually, new_event_id, status_event

Document = dict[str, Any]
TENANT = COURIER.tenant
# Shipments 391-396 of the seeded 400 are this module's; the e2e tests count up from 1.


@pytest.fixture(scope="module")
def mongo(platform: State) -> Iterator[Database[Document]]:
    seed_shipments({"MONGO_URL": platform.mongo_url}, TENANT, 400)
    client: MongoClient[Document] = MongoClient(platform.mongo_url, tz_aware=True)
    yield client.get_default_database()
    client.close()


@pytest.fixture
def routing(platform: State) -> Iterator[StubAdmin]:
    admin = StubAdmin(platform.routing_url)
    yield admin
    admin.faults(latency_ms=50)


@pytest.fixture
def queue() -> str:
    return f"events-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as resources:
        yield resources


def _env(platform: State, queue: str) -> dict[str, str]:
    return {
        "REDIS_URL": platform.redis_url,
        "MONGO_URL": platform.mongo_url,
        "ROUTING_URL": platform.routing_url,
        "EVENT_QUEUE": queue,
        # Slow routing (below) against these: 1.5 s calls, reclaimed after 4 s idle.
        "EVENT_WORKER_VISIBILITY_TIMEOUT_S": "4",
        "EVENT_WORKER_HANDLER_TIMEOUT_S": "3",
    }


@contextmanager
def worker(platform: State, queue: str, run_dir: Path, name: str) -> Iterator[procs.Proc]:
    target = f"{infra.HOST}:{procs.free_port()}"
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, **_env(platform, queue),
           "EVENT_WORKER_GRPC_BIND": target, "EVENT_WORKER_NAME": name}  # fmt: skip
    proc = start_service(name, "", target, env, run_dir, module="services.event.worker")
    try:
        yield proc
    finally:
        if proc.popen.poll() is None:
            procs.stop(proc)


@contextmanager
def gateway(platform: State, queue: str, run_dir: Path) -> Iterator[str]:
    """An event gateway on `queue` behind an Envoy of its own; yields the edge's URL."""
    env = {**_env(platform, queue), "WEBHOOK_SOURCES": json.dumps(
        {COURIER.source: {"tenant": TENANT, "secrets": list(COURIER.secrets)}})}  # fmt: skip
    with (
        running_service("event", run_dir, env) as target,
        running_edge(platform, run_dir / "edge", event=target) as edge,
    ):
        yield edge.rest_url


def pending(client: redis.Redis, queue: str) -> dict[str, int]:
    """Unacknowledged deliveries of the queue, per consumer."""
    summary = client.xpending(f"queue:{queue}", queue)
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"] or []}


def outcome(mongo: Database[Document], event_id: str) -> Document | None:
    return mongo.event_outcomes.find_one({"_id": f"{TENANT}/courier:{event_id}"})


def routes(routing: StubAdmin, shipment: str) -> list[Document]:
    response = routing.as_tenant(TENANT, "GET", "/routes", params={"shipment_id": shipment})
    items: list[Document] = response.raise_for_status().json()["items"]
    return items


def test_a_message_of_a_killed_worker_is_reclaimed_and_processed_once(
    platform: State,
    mongo: Database[Document],
    routing: StubAdmin,
    queue: str,
    tmp_path: Path,
    stack: ExitStack,
) -> None:
    client = stack.enter_context(redis.Redis.from_url(platform.redis_url))
    routing.faults(latency_ms=1500, tenant=TENANT)
    url = stack.enter_context(gateway(platform, queue, tmp_path))
    doomed = stack.enter_context(worker(platform, queue, tmp_path, "doomed"))
    shipment, event_id = shipment_id(391), new_event_id()
    with httpx.Client(base_url=url) as http:
        assert COURIER.deliver(http, status_event(shipment), event_id=event_id).status_code == 202
    eventually(lambda: pending(client, queue).get("doomed") == 1, timeout=5)
    doomed.popen.send_signal(signal.SIGKILL)  # mid-handler: the routing call takes 1.5 s
    doomed.popen.wait(timeout=5)
    assert outcome(mongo, event_id) is None
    killed_at = time.monotonic()

    stack.enter_context(worker(platform, queue, tmp_path, "rescuer"))
    done = eventually(lambda: outcome(mongo, event_id), timeout=15)
    assert time.monotonic() - killed_at >= 3  # not before the visibility timeout (4 s) ran out
    assert done["shipment_id"] == shipment
    eventually(lambda: pending(client, queue) == {} or not any(pending(client, queue).values()))
    assert len(routes(routing, shipment)) == 1
    stats = {k.decode(): int(v) for k, v in client.hgetall(f"queue:{queue}:stats").items()}
    assert stats.get("reclaimed") == 1
    assert stats.get("processed") == 1


def test_a_stopped_worker_finishes_what_it_holds(
    platform: State,
    mongo: Database[Document],
    routing: StubAdmin,
    queue: str,
    tmp_path: Path,
    stack: ExitStack,
) -> None:
    client = stack.enter_context(redis.Redis.from_url(platform.redis_url))
    routing.faults(latency_ms=1500, tenant=TENANT)
    url = stack.enter_context(gateway(platform, queue, tmp_path))
    busy = stack.enter_context(worker(platform, queue, tmp_path, "busy"))
    ids = [new_event_id() for _ in range(3)]
    with httpx.Client(base_url=url) as http:
        for n, event_id in zip((392, 393, 394), ids, strict=True):
            response = COURIER.deliver(http, status_event(shipment_id(n)), event_id=event_id)
            assert response.status_code == 202
    eventually(lambda: pending(client, queue).get("busy") == 3, timeout=5)
    busy.popen.send_signal(signal.SIGTERM)
    assert busy.popen.wait(timeout=10) == 0
    # Everything it held was finished and acknowledged before it exited.
    assert all(outcome(mongo, e) for e in ids)
    assert not any(pending(client, queue).values())


def test_a_message_delivered_twice_to_racing_workers_has_one_effect(
    platform: State,
    mongo: Database[Document],
    routing: StubAdmin,
    queue: str,
    tmp_path: Path,
    stack: ExitStack,
) -> None:
    """At-least-once delivery: the same message twice on the stream, two workers."""
    client = stack.enter_context(redis.Redis.from_url(platform.redis_url))
    routing.faults(latency_ms=300, tenant=TENANT)
    url = stack.enter_context(gateway(platform, queue, tmp_path))
    shipment, event_id = shipment_id(395), new_event_id()
    with httpx.Client(base_url=url) as http:
        assert COURIER.deliver(http, status_event(shipment), event_id=event_id).status_code == 202
    # Redeliver the very entry the gateway appended, twice more, as a broken relay would.
    [(_, fields)] = client.xrange(f"queue:{queue}")
    client.xadd(f"queue:{queue}", fields)
    client.xadd(f"queue:{queue}", fields)
    stack.enter_context(worker(platform, queue, tmp_path, "first"))
    stack.enter_context(worker(platform, queue, tmp_path, "second"))
    eventually(lambda: outcome(mongo, event_id))
    stats_key = f"queue:{queue}:stats"
    eventually(lambda: int(client.hget(stats_key, "processed") or 0) >= 3 or None, timeout=10)
    assert mongo.event_outcomes.count_documents({"_id": f"{TENANT}/courier:{event_id}"}) == 1
    assert len(routes(routing, shipment)) == 1


def test_ingestion_answers_503_when_redis_is_down(platform: State, tmp_path: Path) -> None:
    dead_redis = f"redis://{infra.HOST}:{procs.free_port()}/0"
    env = {"REDIS_URL": dead_redis, "EVENT_REDIS_TIMEOUT_S": "0.5",
           "WEBHOOK_SOURCES": json.dumps({COURIER.source: {"tenant": TENANT,
                                                           "secrets": list(COURIER.secrets)}})}  # fmt: skip
    with (
        running_service("event", tmp_path, env) as target,
        running_edge(platform, tmp_path / "edge", event=target) as edge,
        httpx.Client(base_url=edge.rest_url) as http,
    ):
        response = COURIER.deliver(http, status_event(shipment_id(396)))
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable"
