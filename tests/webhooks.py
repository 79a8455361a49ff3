"""Couriers as tests use them: webhook sources with secrets of this session, signed deliveries.

The platform under test is started with `SOURCES` as its `WEBHOOK_SOURCES`;
each secret is random per session and reaches the services only through that
setting. `Courier.deliver` signs like a Standard Webhooks sender would.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import httpx
from google.api import httpbody_pb2
from pymongo.database import Database
from shop.event.v1 import event_pb2, event_pb2_grpc

from services.event.signatures import decode_secret, generate_secret, sign

T = TypeVar("T")
Document = dict[str, Any]


@dataclass(frozen=True)
class Courier:
    """A webhook source of the platform under test and how it signs."""

    source: str
    tenant: str
    secrets: tuple[str, ...]

    def headers(
        self,
        body: bytes,
        *,
        event_id: str,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> dict[str, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        key = decode_secret(secret or self.secrets[0])
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(key, event_id, ts, body),
            "content-type": "application/json",
        }

    def deliver(
        self,
        http: httpx.Client,
        document: dict[str, Any] | bytes,
        *,
        event_id: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
        path: str | None = None,
    ) -> httpx.Response:
        """POST one signed delivery to this source's address."""
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        headers = self.headers(
            body, event_id=event_id or new_event_id(), timestamp=timestamp, secret=secret
        )
        return http.post(path or f"/v1/events/{self.source}", content=body, headers=headers)

    def ingest(
        self, channel: grpc.Channel, document: dict[str, Any], *, event_id: str | None = None
    ) -> event_pb2.IngestWebhookResponse:
        """The same signed delivery straight to the event gateway over native gRPC, as the
        edge passes it on: the body as an HttpBody, the webhook headers as metadata."""
        body = json.dumps(document).encode()
        headers = self.headers(body, event_id=event_id or new_event_id())
        request = event_pb2.IngestWebhookRequest(
            source=self.source,
            http_body=httpbody_pb2.HttpBody(content_type=headers.pop("content-type"), data=body),
        )
        events = event_pb2_grpc.EventServiceStub(channel)  # type: ignore[no-untyped-call]
        reply: event_pb2.IngestWebhookResponse = events.IngestWebhook(
            request, metadata=tuple(headers.items()), timeout=10
        )
        return reply


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def status_event(
    shipment_id: str, status: str = "out_for_delivery", **extra: Any
) -> dict[str, Any]:
    """A courier's shipment status event."""
    return {
        "type": "shipment.status_changed",
        "data": {"shipmentId": shipment_id, "status": status, **extra},
    }


# The sources of the test platform: the main courier holds two secrets (a rotation
# in progress); the rival belongs to another tenant.
COURIER = Courier("courier", "events-a", (generate_secret(), generate_secret()))
RIVAL = Courier("rival", "events-b", (generate_secret(),))
# Shipments seeded in MongoDB for each test courier's tenant (tests/conftest.py `mongo`).
SHIPMENTS = 400
SOURCES = json.dumps(
    {c.source: {"tenant": c.tenant, "secrets": list(c.secrets)} for c in (COURIER, RIVAL)}
)


def outcome(mongo: Database[Document], courier: Courier, event_id: str) -> Document | None:
    """The recorded outcome of one of `courier`'s events, None until it is processed."""
    return mongo.event_outcomes.find_one({"_id": f"{courier.tenant}/{courier.source}:{event_id}"})


# Quick retries for tests; the defaults (1 s base, 5 attempts, 30 s visibility) are for production.
WORKER_SETTINGS = {
    "WEBHOOK_SOURCES": SOURCES,
    "EVENT_WORKER_RETRY_BASE_S": "0.2",
    "EVENT_WORKER_RETRY_CAP_S": "0.5",
    "EVENT_WORKER_MAX_ATTEMPTS": "3",
    "EVENT_WORKER_VISIBILITY_TIMEOUT_S": "6",
    "EVENT_WORKER_HANDLER_TIMEOUT_S": "4",
    "ROUTING_ATTEMPT_TIMEOUT_S": "3",
    "ROUTING_DEADLINE_S": "3.5",
    "ROUTING_BREAKER_RESET_S": "0.5",
}


def eventually(probe: Callable[[], T | None], *, timeout: float = 15.0, every: float = 0.1) -> T:
    """The first truthy result of `probe` within `timeout` seconds; AssertionError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {probe}")
        time.sleep(every)
