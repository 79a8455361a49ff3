"""One request, one trace: spans from Envoy through the services, the outbox, the relay,
the stream and the worker, exported over OTLP to a receiver of this module.

This module runs a platform of its own with `OTEL_EXPORTER_OTLP_ENDPOINT` set (a
database and a Redis database of its own, so the session platform's relay and
workers never take its rows and messages). Each test drives one flow through
Envoy and asserts on the spans of the request's trace: every span a process of
the flow makes, all with one trace id, and each one's parent in the trace.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pymongo.database import Database

from services.launcher.platform import LauncherConfig, State
from tests import checkout, identity, webhooks
from tests.conftest import own_servers, running_platform
from tests.e2e.test_events_api import next_shipment
from tools.otlp_receiver import Receiver, Span

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


@pytest.fixture(scope="module")
def traced(
    session_run_dir: Path,
    postgres_url: str,
    redis_url: str,
    mongo: Database[webhooks.Document],
    mongo_url: str,
    routing_stub_url: str,
    receiver: Receiver,
) -> Iterator[State]:
    config = LauncherConfig.on_free_ports(
        session_run_dir / "traced",
        own_servers(
            postgres_url, redis_url, mongo_url, routing_stub_url, name="shop_traced", redis_db=3
        ),
        log_level="INFO",
        otlp_endpoint=receiver.endpoint,
        # Spans leave each process within 100 ms (the SDK's default batches for 5 s).
        service_env={
            **identity.CHEAP_ARGON2,
            **webhooks.WORKER_SETTINGS,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    with running_platform(config) as state:
        yield state


@pytest.fixture(scope="module")
def http(traced: State) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=traced.rest_url, timeout=10) as client:
        yield client


def _trace_of(spans: list[Span], request_id: str) -> list[Span]:
    """Every span of the trace whose Envoy span carries `request_id`."""
    edge = [
        s
        for s in spans
        if s.service == "edge" and s.attributes.get("guid:x-request-id") == request_id
    ]
    if not edge:
        return []
    return [s for s in spans if s.trace_id == edge[0].trace_id]


def _connected(trace: list[Span]) -> None:
    """One root (Envoy's), and every other span's parent is in the trace."""
    ids = {s.span_id for s in trace}
    roots = [s for s in trace if not s.parent_id]
    assert [(r.service, r.kind) for r in roots] == [("edge", "server")], roots
    orphans = [f"{s.service}: {s.name}" for s in trace if s.parent_id and s.parent_id not in ids]
    assert not orphans, orphans


def _has(trace: list[Span], service: str, kind: str, name_prefix: str = "") -> Span | None:
    return next(
        (
            s
            for s in trace
            if s.service == service and s.kind == kind and s.name.startswith(name_prefix)
        ),
        None,
    )


Wanted = tuple[str, str, str]  # service, kind, name prefix


def _wait_for_trace(
    receiver: Receiver, request_id: str, *expected: Wanted
) -> tuple[list[Span], list[Span]]:
    """Every span received and the request's trace, once the trace has each expected span
    and is connected (one root, Envoy's; every other span's parent in the trace)."""

    def complete(spans: list[Span]) -> bool:
        trace = _trace_of(spans, request_id)
        if not all(_has(trace, *wanted) for wanted in expected):
            return False
        # Processes flush their batches independently: a span may arrive before its
        # parent does. Wait until the trace is whole; `_connected` says what is not.
        ids = {s.span_id for s in trace}
        return all(not s.parent_id or s.parent_id in ids for s in trace)

    try:
        spans = receiver.wait_for(complete, timeout_s=20)
    except AssertionError:
        spans = receiver.spans
        _connected(_trace_of(spans, request_id))  # names the orphans, if that is why
        raise
    trace = _trace_of(spans, request_id)
    _connected(trace)
    return spans, trace


def _parent(trace: list[Span], span: Span) -> Span:
    return next(s for s in trace if s.span_id == span.parent_id)


@dataclass(frozen=True)
class Flows:
    """The requests the tests follow, each sent with a request id of its own."""

    tenant: str
    admin: identity.Account
    placed_order: str
    webhook: str
    product_write: str


@pytest.fixture(scope="module")
def flows(http: httpx.Client, traced: State) -> Flows:
    """Every flow driven once, up front: the spans of all of them then arrive in the
    same few flushes (Envoy sends its spans every 5 s)."""
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    admin = identity.admin(http, traced, tenant)
    buyer = identity.customer(http, tenant)
    pen = checkout.product(http, admin.headers(), price_cents=250, stock=5, name="Pen")
    ids = [uuid.uuid4().hex for _ in range(3)]
    placed = http.post(
        "/v1/orders",
        json=checkout.order_body((pen, 1)),
        headers=buyer.headers(**{"Idempotency-Key": uuid.uuid4().hex, "X-Request-Id": ids[0]}),
    )
    assert placed.status_code == 201, placed.text

    content = json.dumps(webhooks.status_event(next_shipment())).encode()
    signed = webhooks.COURIER.headers(content, event_id=webhooks.new_event_id())
    response = http.post(
        f"/v1/events/{webhooks.COURIER.source}",
        content=content,
        headers={**signed, "X-Request-Id": ids[1]},
    )
    assert response.status_code == 202, response.text

    created = http.post(
        "/v1/products",
        json={"sku": f"TR-{uuid.uuid4().hex[:8].upper()}", "name": "Traced", "priceCents": 100},
        headers={
            **admin.headers(),
            "Idempotency-Key": uuid.uuid4().hex,
            "X-Request-Id": ids[2],
        },
    )
    assert created.status_code == 201, created.text
    return Flows(tenant, admin, *ids)


def test_a_placed_order_is_one_trace_from_envoy_through_the_queue_to_the_pipeline(
    flows: Flows, receiver: Receiver
) -> None:
    spans, trace = _wait_for_trace(
        receiver,
        flows.placed_order,
        ("edge", "server", ""),
        ("order", "server", "/shop.order.v1.OrderService/CreateOrder"),
        ("order", "client", "INSERT"),  # PostgreSQL
        ("order", "client", "shop.inventory.v1.ReservationService/Reserve"),
        ("inventory", "server", "/shop.inventory.v1.ReservationService/Reserve"),
        # The reservation is one statement of data-modifying CTEs (and so is the
        # low-stock outbox row it may write): PostgreSQL spans named WITH.
        ("inventory", "client", "WITH"),
        ("relay", "producer", "publish orders"),
        ("relay", "client", "XADD"),  # Redis
        ("order-pipeline", "consumer", "process orders"),
        ("order-pipeline", "client", "POST payments"),  # the Payment provider, over HTTP
    )
    # The relay's producer span continues the request (its parent wrote the row), and
    # the pipeline's consumer span is the producer's child. The relay's batch, which
    # may carry several requests' rows, is a trace of its own linked to each writer.
    producer = _has(trace, "relay", "producer", "publish orders")
    consumer = _has(trace, "order-pipeline", "consumer", "process orders")
    assert producer
    assert consumer
    assert _parent(trace, consumer) == producer
    writer = _parent(trace, producer)
    assert writer.name == "/shop.order.v1.OrderService/CreateOrder"
    batches = [s for s in spans if s.service == "relay" and s.name == "relay outbox"]
    assert any((writer.trace_id, writer.span_id) in b.links for b in batches), batches
    sql = _has(trace, "order", "client", "INSERT")
    assert sql
    assert sql.attributes["db.system"] == "postgresql"
    assert "$1" in str(sql.attributes["db.statement"])  # placeholders, never the values


def test_a_webhook_is_one_trace_through_redis_to_the_worker_and_mongodb(
    flows: Flows, receiver: Receiver
) -> None:
    _, trace = _wait_for_trace(
        receiver,
        flows.webhook,
        ("edge", "server", ""),
        ("event", "server", "/shop.event.v1.EventService/IngestWebhook"),
        ("event", "client", "EVALSHA"),
        ("event-worker", "consumer", "process events"),
        ("event-worker", "client", "find "),  # MongoDB
        ("event-worker", "client", "POST routing"),
    )
    find = _has(trace, "event-worker", "client", "find ")
    assert find
    assert find.attributes["db.system.name"] == "mongodb"
    assert find.attributes["db.collection.name"]


def test_a_catalogue_write_traces_the_upstream_call_to_the_erp(
    flows: Flows, receiver: Receiver
) -> None:
    _, trace = _wait_for_trace(receiver, flows.product_write, ("product", "client", "POST erp"))
    erp = _has(trace, "product", "client", "POST erp")
    assert erp
    assert erp.attributes["http.response.status_code"] == 201
    assert _parent(trace, erp).service == "product"


def _log_events(logs_dir: Path) -> dict[str, list[dict[str, object]]]:
    """Every log file's lines, each parsed as one JSON object (AssertionError naming the
    file and line of any that is not one)."""
    found: dict[str, list[dict[str, object]]] = {}
    for log in sorted(logs_dir.glob("*.log")):
        events = found.setdefault(log.stem, [])
        for number, line in enumerate(log.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                raise AssertionError(f"{log.name}:{number} is not JSON: {line[:200]}") from None
            assert isinstance(event, dict), f"{log.name}:{number}: {line[:200]}"
            events.append(event)
    return found


def test_every_log_line_is_one_json_object_with_the_request_and_trace_ids(
    flows: Flows, traced: State, receiver: Receiver
) -> None:
    tenant, admin, request_id = flows.tenant, flows.admin, flows.product_write
    server_span = ("product", "server", "/shop.product.v1.ProductService/CreateProduct")
    _, trace = _wait_for_trace(receiver, request_id, server_span, ("product", "client", "POST erp"))
    trace_id = trace[0].trace_id
    server = _has(trace, *server_span)
    assert server

    def mine(events: list[dict[str, object]]) -> list[dict[str, object]]:
        return [e for e in events if e.get("request_id") == request_id]

    # Envoy flushes its access log once a second.
    deadline = time.monotonic() + 5
    while True:
        events = _log_events(Path(traced.logs_dir))
        if mine(events.get("envoy", [])) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    [service_line] = [e for e in mine(events["product"]) if e["msg"] == "rpc"]
    assert service_line["trace_id"] == trace_id
    assert service_line["span_id"] == server.span_id
    assert (service_line["tenant"], service_line["user"]) == (tenant, admin.id)
    assert (service_line["rpc_method"], service_line["status"]) == ("CreateProduct", "OK")
    assert isinstance(service_line["duration_ms"], float)
    [edge_line] = mine(events["envoy"])
    assert edge_line["trace_id"] == trace_id
    assert (edge_line["tenant"], edge_line["user"], edge_line["status"]) == (tenant, admin.id, 201)
    # The ERP stub logs the caller's request id and attempt span.
    [erp_line] = mine(events["erp"])
    assert erp_line["trace_id"] == trace_id
    erp_span = _has(trace, "product", "client", "POST erp")
    assert erp_span
    assert erp_line["span_id"] == erp_span.span_id
