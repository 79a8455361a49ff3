"""The event gateway through Envoy: signed webhooks in, processed once, dead letters out.

Deliveries go to the platform's Envoy like a courier's would; the platform's
event worker processes them against the MongoDB-wire server and the Routing
stub, whose faults each test sets.
"""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest
import redis
from pymongo.database import Database

from services.launcher.platform import State
from stubs.shipments import shipment_id
from tests import identity
from tests.e2e.conftest import assert_error
from tests.upstream_admin import StubAdmin
from tests.webhooks import (
    COURIER,
    RIVAL,
    Document,
    eventually,
    new_event_id,
    outcome,
    status_event,
)

_numbers = itertools.count(1)


def next_shipment() -> str:
    """A shipment with an active order that no other test touches."""
    while True:
        n = next(_numbers)
        if n % 50:  # every 50th seeded shipment has no active order
            return shipment_id(n)


@pytest.fixture(scope="module")
def admins(http: httpx.Client, platform: State) -> dict[str, identity.Account]:
    return {c.source: identity.admin(http, platform, c.tenant) for c in (COURIER, RIVAL)}


def dead_letters(http: httpx.Client, admin: identity.Account) -> list[Document]:
    response = http.get("/v1/admin/dlq", headers=admin.headers())
    assert response.status_code == 200, response.text
    items: list[Document] = response.json().get("items", [])
    return items


def dead_letter_of(http: httpx.Client, admin: identity.Account, event_id: str) -> Document | None:
    key = f"{COURIER.source}:{event_id}"
    return next((d for d in dead_letters(http, admin) if d["messageId"] == key), None)


# --- ingestion ----------------------------------------------------------------------


def test_a_signed_webhook_is_acknowledged_then_processed_once(
    http: httpx.Client, mongo: Database[Document], routing: StubAdmin
) -> None:
    shipment, event_id = next_shipment(), new_event_id()
    started = time.perf_counter()
    response = COURIER.deliver(http, status_event(shipment), event_id=event_id)
    acked_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 202, response.text
    assert response.json() == {"id": event_id, "duplicate": False, "source": "courier"}
    assert acked_ms < 150  # the seed's handshake target; processing happens later

    done = eventually(lambda: outcome(mongo, COURIER, event_id))
    assert done["shipment_id"] == shipment
    assert done["route"]["route_id"].startswith("RT-")
    assert done["order_id"] is not None  # the active order was loaded from MongoDB
    # The shipment's projection follows the outcome.
    record = eventually(
        lambda: mongo.shipments.find_one(
            {"_id": f"{COURIER.tenant}/{shipment}", "last_event": done["_id"]}
        )
    )
    assert record["status"] == "out_for_delivery"
    assert record["route"]["route_id"] == done["route"]["route_id"]
    assert len(routing.routes(COURIER.tenant, shipment)) == 1


def test_the_default_address_and_a_rotated_secret_are_accepted(http: httpx.Client) -> None:
    body = status_event(next_shipment())
    response = COURIER.deliver(http, body, secret=COURIER.secrets[1], path="/v1/events")
    assert response.status_code == 202, response.text
    # Several signatures, one of them right: the sender is mid-rotation.
    raw = json.dumps(body).encode()
    headers = COURIER.headers(raw, event_id=new_event_id())
    headers["webhook-signature"] = "v1,AAAA" + " " + headers["webhook-signature"]
    response = http.post("/v1/events/courier", content=raw, headers=headers)
    assert response.status_code == 202, response.text


def test_a_duplicate_is_acknowledged_and_processed_once(
    http: httpx.Client, mongo: Database[Document], routing: StubAdmin
) -> None:
    shipment, event_id = next_shipment(), new_event_id()
    first = COURIER.deliver(http, status_event(shipment), event_id=event_id)
    assert first.status_code == 202, first.text
    again = COURIER.deliver(http, status_event(shipment), event_id=event_id)
    assert again.status_code == 200, again.text
    assert again.json() == {"id": event_id, "duplicate": True, "source": "courier"}
    eventually(lambda: outcome(mongo, COURIER, event_id))
    time.sleep(0.5)  # room for a second processing, were there one
    key = f"{COURIER.tenant}/courier:{event_id}"
    assert mongo.event_outcomes.count_documents({"_id": key}) == 1
    assert len(routing.routes(COURIER.tenant, shipment)) == 1


def _refused(
    http: httpx.Client, redis_client: redis.Redis, event_id: str, response: httpx.Response
) -> None:
    assert_error(response, 401, "unauthenticated")
    # Nothing was enqueued: the id is still free, and a proper delivery of it is new.
    assert not redis_client.exists(f"events:seen:{COURIER.tenant}:courier:{event_id}")


@pytest.mark.parametrize(
    "tamper",
    ["wrong-secret", "body-changed", "other-id", "stale", "future", "no-signature",
     "malformed-signature", "no-id", "no-timestamp", "bad-timestamp"],
)  # fmt: skip
def test_unauthentic_deliveries_are_401_and_enqueue_nothing(
    http: httpx.Client, redis_client: redis.Redis, tamper: str
) -> None:
    event_id = new_event_id()
    body = json.dumps(status_event(next_shipment())).encode()
    headers = COURIER.headers(body, event_id=event_id)
    sent = body
    if tamper == "wrong-secret":
        headers = COURIER.headers(body, event_id=event_id, secret=RIVAL.secrets[0])
    elif tamper == "body-changed":
        sent = body.replace(b"out_for_delivery", b"delivered")
    elif tamper == "other-id":
        # A captured signature replayed under another id.
        headers["webhook-signature"] = COURIER.headers(body, event_id="evt_other")[
            "webhook-signature"
        ]
    elif tamper == "stale":  # a captured delivery replayed six minutes later
        headers = COURIER.headers(body, event_id=event_id, timestamp=int(time.time()) - 360)
    elif tamper == "future":
        headers = COURIER.headers(body, event_id=event_id, timestamp=int(time.time()) + 360)
    elif tamper == "no-signature":
        del headers["webhook-signature"]
    elif tamper == "malformed-signature":
        headers["webhook-signature"] = "sha256=" + headers["webhook-signature"][3:]
    elif tamper == "no-id":
        del headers["webhook-id"]
    elif tamper == "no-timestamp":
        del headers["webhook-timestamp"]
    elif tamper == "bad-timestamp":
        headers["webhook-timestamp"] = "yesterday"
    response = http.post("/v1/events/courier", content=sent, headers=headers)
    _refused(http, redis_client, event_id, response)
    assert COURIER.deliver(http, body, event_id=event_id).json()["duplicate"] is False


def test_an_unknown_source_is_401(http: httpx.Client) -> None:
    body = json.dumps(status_event(next_shipment())).encode()
    response = http.post(
        "/v1/events/nobody", content=body, headers=COURIER.headers(body, event_id=new_event_id())
    )
    assert_error(response, 401, "unauthenticated")


def test_bodies_over_the_limit_are_413(http: httpx.Client) -> None:
    # Over the source limit (256 KiB): the gateway refuses it.
    padded = status_event(next_shipment(), note="x" * (300 * 1024))
    assert_error(COURIER.deliver(http, padded), 413, "payload_too_large")
    # Over the edge's 1 MiB: Envoy refuses it before any service sees it.
    huge = status_event(next_shipment(), note="x" * (1100 * 1024))
    assert_error(COURIER.deliver(http, huge), 413, "payload_too_large")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"type": "shipment.status_changed", "data": {', None),
        (b"[1, 2]", None),
        (b'{"type": "shipment.status_changed", "data": {"status": "delivered"}}', "data.shipmentId"),
        (b'{"type": "Shipment Status", "data": {"shipmentId": "S", "status": "x"}}', "type"),
        (b'{"type": "shipment.status_changed", "data": {"shipmentId": "S"}}', "data.status"),
        (b'{"type": "a.b", "timestamp": "soon", "data": {"shipmentId": "S", "status": "x"}}',
         "timestamp"),
    ],
)  # fmt: skip
def test_malformed_signed_bodies_are_400(
    http: httpx.Client, redis_client: redis.Redis, body: bytes, field: str | None
) -> None:
    event_id = new_event_id()
    error = assert_error(COURIER.deliver(http, body, event_id=event_id), 400, "invalid_argument")
    if field is not None:
        assert field in json.dumps(error["details"]), error
    assert not redis_client.exists(f"events:seen:{COURIER.tenant}:courier:{event_id}")


def test_internal_callers_publish_with_an_admin_token(
    http: httpx.Client, mongo: Database[Document], admins: dict[str, identity.Account]
) -> None:
    admin, event_id = admins["courier"], new_event_id()
    event = {"id": event_id, "source": "courier", **status_event(next_shipment(), "delivered")}
    response = http.post("/v1/admin/events", json=event, headers=admin.headers())
    assert response.status_code == 202, response.text
    assert response.json()["duplicate"] is False
    again = http.post("/v1/admin/events", json=event, headers=admin.headers())
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    done = eventually(lambda: outcome(mongo, COURIER, event_id))
    assert done["status"] == "delivered"
    assert_error(http.post("/v1/admin/events", json=event), 401, "unauthenticated")
    customer = identity.customer(http, COURIER.tenant)
    assert_error(
        http.post("/v1/admin/events", json=event, headers=customer.headers()),
        403,
        "permission_denied",
    )


# --- processing: retries and dead letters -------------------------------------------


def test_a_failing_routing_call_is_retried_then_succeeds(
    http: httpx.Client, mongo: Database[Document], routing: StubAdmin
) -> None:
    shipment, event_id = next_shipment(), new_event_id()
    # Each call fails after 0.5 s; the test heals the upstream once the second call
    # arrived (its failure is already drawn), so the third and last attempt succeeds.
    routing.faults(latency_ms=500, error_rate=1.0, error_status=503, tenant=COURIER.tenant)
    routing.reset_stats()
    assert COURIER.deliver(http, status_event(shipment), event_id=event_id).status_code == 202
    eventually(lambda: routing.requests("POST /routes") >= 2, timeout=10)
    routing.faults(latency_ms=50)
    assert outcome(mongo, COURIER, event_id) is None
    done = eventually(lambda: outcome(mongo, COURIER, event_id))
    assert done["attempts"] == 3  # two failed attempts, each retried after a backoff
    assert routing.requests("POST /routes") == 3
    assert len(routing.routes(COURIER.tenant, shipment)) == 1


def test_an_older_event_never_overwrites_a_newer_one(
    http: httpx.Client, mongo: Database[Document]
) -> None:
    shipment = next_shipment()
    newer = status_event(shipment, "delivered") | {"timestamp": "2026-11-20T10:00:00Z"}
    older = status_event(shipment, "in_transit") | {"timestamp": "2026-11-20T09:00:00Z"}
    first, second = new_event_id(), new_event_id()
    assert COURIER.deliver(http, newer, event_id=first).status_code == 202
    eventually(
        lambda: mongo.shipments.find_one(
            {
                "_id": f"{COURIER.tenant}/{shipment}",
                "last_event": f"{COURIER.tenant}/courier:{first}",
            }
        )
    )
    assert COURIER.deliver(http, older, event_id=second).status_code == 202
    # The older event is processed (its outcome recorded) but does not move the shipment back.
    eventually(lambda: outcome(mongo, COURIER, second))
    time.sleep(0.3)
    record = mongo.shipments.find_one({"_id": f"{COURIER.tenant}/{shipment}"})
    assert record is not None
    assert record["status"] == "delivered"


def test_exhausted_retries_dead_letter_and_replay_processes_once(
    http: httpx.Client,
    mongo: Database[Document],
    routing: StubAdmin,
    admins: dict[str, identity.Account],
) -> None:
    admin, rival = admins["courier"], admins["rival"]
    shipment, event_id = next_shipment(), new_event_id()
    routing.faults(error_rate=1.0, error_status=503, tenant=COURIER.tenant)
    assert COURIER.deliver(http, status_event(shipment), event_id=event_id).status_code == 202
    dead = eventually(lambda: dead_letter_of(http, admin, event_id), timeout=20)
    assert dead["attempts"] == 3
    assert "routing" in dead["error"]
    assert dead["payload"]["id"] == event_id
    assert outcome(mongo, COURIER, event_id) is None

    one = http.get(f"/v1/admin/dlq/{dead['id']}", headers=admin.headers())
    assert one.status_code == 200
    assert one.json()["messageId"] == dead["messageId"]
    # Another tenant's admin neither sees nor touches it.
    assert all(d["messageId"] != dead["messageId"] for d in dead_letters(http, rival))
    for method, path in (("GET", ""), ("POST", "/replay"), ("DELETE", "")):
        response = http.request(
            method, f"/v1/admin/dlq/{dead['id']}{path}", headers=rival.headers()
        )
        assert_error(response, 404, "not_found")
    customer = identity.customer(http, COURIER.tenant)
    assert_error(http.get("/v1/admin/dlq", headers=customer.headers()), 403, "permission_denied")

    routing.faults(latency_ms=50)
    replay = http.post(f"/v1/admin/dlq/{dead['id']}/replay", json={}, headers=admin.headers())
    assert replay.status_code == 200
    assert replay.json() == {"replayed": 1}
    done = eventually(lambda: outcome(mongo, COURIER, event_id))
    assert done["event_id"] == event_id  # the replay kept the event's id
    assert dead_letter_of(http, admin, event_id) is None
    assert len(routing.routes(COURIER.tenant, shipment)) == 1
    # A second replay of the same dead letter finds nothing.
    again = http.post(f"/v1/admin/dlq/{dead['id']}/replay", json={}, headers=admin.headers())
    assert_error(again, 404, "not_found")


def test_an_unknown_shipment_ends_in_the_dead_letters(
    http: httpx.Client, admins: dict[str, identity.Account]
) -> None:
    event_id = new_event_id()
    assert COURIER.deliver(http, status_event("SHP-UNKNOWN"), event_id=event_id).status_code == 202
    dead = eventually(lambda: dead_letter_of(http, admins["courier"], event_id), timeout=20)
    assert "SHP-UNKNOWN" in dead["error"]


def test_replay_all_and_purge(
    http: httpx.Client, routing: StubAdmin, admins: dict[str, identity.Account]
) -> None:
    admin = admins["courier"]
    routing.faults(error_rate=1.0, error_status=503, tenant=COURIER.tenant)
    ids = [new_event_id() for _ in range(3)]
    for event_id in ids:
        assert (
            COURIER.deliver(http, status_event(next_shipment()), event_id=event_id).status_code
            == 202
        )
    eventually(lambda: all(dead_letter_of(http, admin, e) for e in ids), timeout=20)
    # Still failing: replaying all sends them round again, back to the dead letters.
    replayed = http.post("/v1/admin/dlq/replay", json={}, headers=admin.headers())
    assert replayed.status_code == 200
    assert replayed.json()["replayed"] >= 3
    eventually(lambda: all(dead_letter_of(http, admin, e) for e in ids), timeout=20)
    first = dead_letter_of(http, admin, ids[0])
    assert first is not None
    deleted = http.delete(f"/v1/admin/dlq/{first['id']}", headers=admin.headers())
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted": 1}
    purged = http.delete("/v1/admin/dlq", headers=admin.headers())
    assert purged.status_code == 200
    assert purged.json()["deleted"] >= 2
    assert dead_letters(http, admin) == []


def test_dead_letter_admin_refuses_bad_input(
    http: httpx.Client, admins: dict[str, identity.Account]
) -> None:
    admin = admins["courier"]
    assert_error(http.get("/v1/admin/dlq", params={"queue": "nope"}, headers=admin.headers()),
                 400, "invalid_argument")  # fmt: skip
    assert_error(
        http.get("/v1/admin/dlq/not-an-id", headers=admin.headers()), 400, "invalid_argument"
    )
    assert_error(http.get("/v1/admin/dlq", params={"limit": 500}, headers=admin.headers()),
                 400, "invalid_argument")  # fmt: skip
