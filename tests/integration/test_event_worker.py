"""Event workers as real processes: killed mid-message, stopped while busy, racing each other.

Each test runs an event gateway and workers of its own on a queue of its own, so it
can kill and stop them, and delivers to the gateway over native gRPC (no edge);
Redis, MongoDB and the Routing stub are the session's.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from pymongo.database import Database

from services.event.domain import EVENT_TYPE
from services.launcher import PYTHONPATH, infra, procs
from services.launcher.platform import start_service
from stubs.shipments import shipment_id
from tests.edges import running_service
from tests.upstream_admin import StubAdmin
from tests.webhooks import (
    COURIER,
    SOURCES,
    Document,
    eventually,
    new_event_id,
    outcome,
    status_event,
)

TENANT = COURIER.tenant
# Shipments 391-396 of the seeded 400 are this module's; the e2e tests count up from 1.

# The event gateway signs dead-letter cursors with it.
CURSOR_SECRET = "integration-test-cursor-secret"


@dataclass(frozen=True)
class Servers:
    """Where the session's Redis, MongoDB-wire server and Routing stub listen."""

    redis_url: str
    mongo_url: str
    routing_url: str


@dataclass
class Pipeline:
    """An event gateway on a queue of its own; workers on demand."""

    servers: Servers
    queue: str
    run_dir: Path
    stack: ExitStack
    redis: redis.Redis
    gateway: grpc.Channel | None = None

    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.servers.redis_url,
            "MONGO_URL": self.servers.mongo_url,
            "ROUTING_URL": self.servers.routing_url,
            "WEBHOOK_SOURCES": SOURCES,
            "CURSOR_SECRET": CURSOR_SECRET,
            "EVENT_QUEUE": self.queue,
            # Slow routing (set by each test) against these: reclaimed after 4 s idle.
            "EVENT_WORKER_VISIBILITY_TIMEOUT_S": "4",
            "EVENT_WORKER_HANDLER_TIMEOUT_S": "3",
        }

    def worker(self, name: str) -> procs.Proc:
        """A worker process on the queue, stopped (if still running) after the test."""
        return self.stack.enter_context(self._worker(name))

    @contextmanager
    def _worker(self, name: str) -> Iterator[procs.Proc]:
        target = f"{infra.HOST}:{procs.free_port()}"
        env = {**os.environ, "PYTHONPATH": PYTHONPATH, **self.env(),
               "EVENT_WORKER_GRPC_BIND": target, "EVENT_WORKER_NAME": name}  # fmt: skip
        proc = start_service(name, "", target, env, self.run_dir, module="services.event.worker")
        try:
            yield proc
        finally:
            if proc.popen.poll() is None:
                procs.stop(proc)

    def deliver(self, shipment: str, event_id: str) -> None:
        assert self.gateway is not None
        accepted = COURIER.ingest(self.gateway, status_event(shipment), event_id=event_id)
        assert (accepted.id, accepted.duplicate) == (event_id, False)

    def pending(self) -> dict[str, int]:
        """Unacknowledged deliveries of the queue, per consumer."""
        summary = self.redis.xpending(f"queue:{self.queue}", self.queue)
        return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"] or []}

    def counter(self, name: str) -> int:
        return int(self.redis.hget(f"queue:{self.queue}:stats", name) or 0)


@pytest.fixture
def pipeline(
    redis_url: str, mongo_url: str, routing_stub_url: str, tmp_path: Path
) -> Iterator[Pipeline]:
    with ExitStack() as stack:
        made = Pipeline(
            Servers(redis_url, mongo_url, routing_stub_url),
            f"events-{uuid.uuid4().hex[:8]}",
            tmp_path,
            stack,
            stack.enter_context(redis.Redis.from_url(redis_url)),
        )
        target = stack.enter_context(running_service("event", tmp_path, made.env()))
        made.gateway = stack.enter_context(grpc.insecure_channel(target))
        yield made


def test_a_message_of_a_killed_worker_is_reclaimed_and_processed_once(
    pipeline: Pipeline, mongo: Database[Document], routing: StubAdmin
) -> None:
    routing.faults(latency_ms=1500, tenant=TENANT)
    doomed = pipeline.worker("doomed")
    shipment, event_id = shipment_id(391), new_event_id()
    pipeline.deliver(shipment, event_id)
    eventually(lambda: pipeline.pending().get("doomed") == 1, timeout=5)
    doomed.popen.send_signal(signal.SIGKILL)  # mid-handler: the routing call takes 1.5 s
    doomed.popen.wait(timeout=5)
    assert outcome(mongo, COURIER, event_id) is None
    killed_at = time.monotonic()

    pipeline.worker("rescuer")
    done = eventually(lambda: outcome(mongo, COURIER, event_id), timeout=15)
    assert time.monotonic() - killed_at >= 3  # not before the visibility timeout (4 s) ran out
    assert done["shipment_id"] == shipment
    eventually(lambda: not any(pipeline.pending().values()))
    assert len(routing.routes(TENANT, shipment)) == 1
    assert pipeline.counter("reclaimed") == 1
    assert pipeline.counter("processed") == 1


def test_a_stopped_worker_finishes_what_it_holds(
    pipeline: Pipeline, mongo: Database[Document], routing: StubAdmin
) -> None:
    routing.faults(latency_ms=1500, tenant=TENANT)
    busy = pipeline.worker("busy")
    ids = [new_event_id() for _ in range(3)]
    for n, event_id in zip((392, 393, 394), ids, strict=True):
        pipeline.deliver(shipment_id(n), event_id)
    eventually(lambda: pipeline.pending().get("busy") == 3, timeout=5)
    busy.popen.send_signal(signal.SIGTERM)
    assert busy.popen.wait(timeout=10) == 0
    # Everything it held was finished and acknowledged before it exited.
    assert all(outcome(mongo, COURIER, e) for e in ids)
    assert not any(pipeline.pending().values())


def test_a_message_delivered_twice_to_racing_workers_has_one_effect(
    pipeline: Pipeline, mongo: Database[Document], routing: StubAdmin
) -> None:
    """At-least-once delivery: the same message three times on the stream, two workers."""
    routing.faults(latency_ms=300, tenant=TENANT)
    shipment, event_id = shipment_id(395), new_event_id()
    pipeline.deliver(shipment, event_id)
    # Redeliver the very entry the gateway appended, twice more, as a broken relay would.
    stream = f"queue:{pipeline.queue}"
    entries: Any = pipeline.redis.xrange(stream)
    [(_, fields)] = entries
    pipeline.redis.xadd(stream, fields)
    pipeline.redis.xadd(stream, fields)
    pipeline.worker("first")
    pipeline.worker("second")
    eventually(lambda: outcome(mongo, COURIER, event_id))
    eventually(lambda: pipeline.counter("processed") >= 3, timeout=10)
    assert mongo.event_outcomes.count_documents({"_id": f"{TENANT}/courier:{event_id}"}) == 1
    assert len(routing.routes(TENANT, shipment)) == 1


def test_ingestion_is_unavailable_when_redis_is_down(tmp_path: Path) -> None:
    # tests/e2e/test_event_unavailable.py: the edge answers this with a 503 JSON error.
    dead_redis = f"redis://{infra.HOST}:{procs.free_port()}/0"
    env = {"REDIS_URL": dead_redis, "EVENT_REDIS_TIMEOUT_S": "0.5", "WEBHOOK_SOURCES": SOURCES,
           "CURSOR_SECRET": CURSOR_SECRET}  # fmt: skip
    with (
        running_service("event", tmp_path, env) as target,
        grpc.insecure_channel(target) as gateway,
        pytest.raises(grpc.RpcError) as refused,
    ):
        COURIER.ingest(gateway, status_event(shipment_id(396)))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_any_courier_type_is_processed_and_a_type_the_intake_refuses_is_dead_lettered_once(
    pipeline: Pipeline, mongo: Database[Document], routing: StubAdmin
) -> None:
    shipment, event_id = shipment_id(396), new_event_id()
    assert pipeline.gateway is not None
    delivered = status_event(shipment, "delivered") | {"type": "shipment.delivered"}
    accepted = COURIER.ingest(pipeline.gateway, delivered, event_id=event_id)
    assert (accepted.id, accepted.duplicate) == (event_id, False)
    # A valid courier event under a type the intake answers with a 400, written past it.
    stream = f"queue:{pipeline.queue}"
    entries: Any = pipeline.redis.xrange(stream)
    [(_, fields)] = entries
    stray_id = new_event_id()
    payload = json.loads(fields[b"payload"]) | {"id": stray_id}
    stray = {**fields, b"id": f"courier:{stray_id}".encode(), b"type": b"Shipment Delivered",
             b"payload": json.dumps(payload).encode()}  # fmt: skip
    pipeline.redis.xadd(stream, stray)  # type: ignore[arg-type]
    pipeline.worker("router")

    done = eventually(lambda: outcome(mongo, COURIER, event_id))
    assert (done["type"], done["status"]) == ("shipment.delivered", "delivered")
    eventually(lambda: pipeline.counter("dead_lettered") == 1)
    [(_, dead)] = pipeline.redis.xrange(f"{stream}:dead")
    assert dead[b"id"] == f"courier:{stray_id}".encode()
    assert dead[b"error"].decode() == (
        "UnknownMessageType: no handler for message type 'Shipment Delivered' on this worker "
        f"(it takes /{EVENT_TYPE.pattern}/)"
    )
    assert dead[b"attempts"] == b"1"
    # The outcome is stored before its message is acked (and counted as processed).
    eventually(lambda: pipeline.counter("processed") == 1)
    assert pipeline.counter("retried") == 0
    assert outcome(mongo, COURIER, stray_id) is None
