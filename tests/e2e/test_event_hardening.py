"""Bad input to the event gateway through Envoy: a clear 4xx, and nothing enqueued or changed.

JSON limits (depth, repeated keys, null array elements) hold at the edge for
every JSON body and in the services for what they parse themselves; ids that
become headers and keys are printable tokens; event times cannot come from the
future; a known event id with other content is a conflict; dead-letter ids and
cursors are validated and cursors are signed per tenant and queue.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import grpc
import httpx
import pytest
import redis
from google.protobuf import struct_pb2
from pymongo.database import Database
from shop.event.v1 import event_pb2, event_pb2_grpc

from services.kit import jsonlimits
from services.kit.streams import Message
from services.kit.streams.message import as_text, encode
from services.launcher.platform import State
from stubs.shipments import shipment_id
from tests import identity
from tests.e2e.conftest import assert_error
from tests.webhooks import COURIER, Document, eventually, new_event_id, outcome, status_event

DEAD = "queue:events:dead"
STREAM = "queue:events"
# Seeded shipments this module alone uses (test_events_api counts up from 1).
_shipments = iter(n for n in range(300, 400) if n % 50)


@pytest.fixture(scope="module")
def admin(http: httpx.Client, platform: State) -> identity.Account:
    return identity.admin(http, platform, COURIER.tenant)


def nested(levels: int) -> str:
    """JSON of exactly `levels` levels of objects and arrays."""
    return '{"a":' * (levels - 1) + "[]" + "}" * (levels - 1)


def webhook_with_data(extra: str) -> bytes:
    """A valid event body whose data carries `extra` (raw JSON) as `extra`."""
    shipment = shipment_id(next(_shipments))
    return (
        f'{{"type": "shipment.status_changed", "data": {{"shipmentId": "{shipment}", '
        f'"status": "in_transit", "extra": {extra}}}}}'
    ).encode()


def not_enqueued(redis_client: redis.Redis, event_id: str) -> bool:
    return not redis_client.exists(f"events:seen:{COURIER.tenant}:courier:{event_id}")


# --- 1. one JSON depth limit, repeated keys, null elements ------------------------------


@pytest.mark.parametrize("levels", [33, 98, 1_000, 100_000])
def test_a_signed_webhook_nested_too_deep_is_400(
    http: httpx.Client, redis_client: redis.Redis, levels: int
) -> None:
    # The body's own object is level 1, data level 2, extra from level 3.
    event_id = new_event_id()
    body = webhook_with_data(nested(levels - 2))
    error = assert_error(COURIER.deliver(http, body, event_id=event_id), 400, "invalid_argument")
    assert f"more than {jsonlimits.MAX_DEPTH} levels" in error["message"]
    assert not_enqueued(redis_client, event_id)


def test_a_webhook_at_the_depth_limit_is_accepted(http: httpx.Client) -> None:
    body = webhook_with_data(nested(jsonlimits.MAX_DEPTH - 2))
    assert COURIER.deliver(http, body).status_code == 202


@pytest.mark.parametrize("levels", [33, 40, 98, 1_000])
def test_an_admin_event_with_data_nested_too_deep_is_400(
    http: httpx.Client, admin: identity.Account, levels: int
) -> None:
    event = {"id": new_event_id(), **status_event(shipment_id(next(_shipments)))}
    body = json.dumps(event)[:-2] + ', "extra": ' + nested(levels - 2) + "}}"
    response = http.post(
        "/v1/admin/events",
        content=body,
        headers=admin.headers(**{"content-type": "application/json"}),
    )
    error = assert_error(response, 400, "invalid_argument")
    assert "upb" not in error["message"]


def test_an_admin_event_at_the_depth_limit_is_accepted(
    http: httpx.Client, admin: identity.Account
) -> None:
    event = {"id": new_event_id(), **status_event(shipment_id(next(_shipments)))}
    body = json.dumps(event)[:-2] + ', "extra": ' + nested(jsonlimits.MAX_DEPTH - 2) + "}}"
    response = http.post(
        "/v1/admin/events",
        content=body,
        headers=admin.headers(**{"content-type": "application/json"}),
    )
    assert response.status_code == 202, response.text


def test_native_grpc_callers_meet_the_same_depth_limit(
    platform: State, admin: identity.Account
) -> None:
    # The edge leaves native gRPC alone; the service converts the Struct and checks it.
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(jsonlimits.MAX_DEPTH - 1):
        inner["a"] = {}
        inner = inner["a"]
    data = struct_pb2.Struct()
    data.update({"shipmentId": shipment_id(next(_shipments)), "status": "x", "deep": deep})
    request = event_pb2.PublishEventRequest(
        id=new_event_id(), type="shipment.status_changed", data=data
    )
    with grpc.insecure_channel(platform.grpc_target) as channel:
        events = event_pb2_grpc.EventServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as refused:
            events.PublishEvent(
                request, metadata=[("authorization", f"Bearer {admin.token}")], timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested more than" in (refused.value.details() or "")


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2), for payloads no library will build."""
    size, length = bytearray(), len(payload)
    while True:
        size.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            return bytes([number << 3 | 2]) + bytes(size) + payload


def test_a_message_too_deep_to_decode_is_invalid_argument_not_internal(
    platform: State, admin: identity.Account
) -> None:
    # Far over the limit protobuf's decoder gives up before any handler runs (and
    # before the client's own library would build such a message): the kit's
    # interceptor still answers in the error model.
    value = _field(3, b"x")  # Value.string_value
    for _ in range(200):
        entry = _field(1, b"a") + _field(2, value)  # Struct.fields map entry
        value = _field(5, _field(1, entry))  # Value.struct_value
    body = event_pb2.PublishEventRequest(id=new_event_id(), type="shipment.status_changed")
    raw = body.SerializeToString() + _field(5, _field(1, _field(1, b"deep") + _field(2, value)))
    with grpc.insecure_channel(platform.grpc_target) as channel:
        publish = channel.unary_unary(
            "/shop.event.v1.EventService/PublishEvent",
            request_serializer=lambda data: data,
            response_deserializer=event_pb2.PublishEventResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            publish(raw, metadata=[("authorization", f"Bearer {admin.token}")], timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot be decoded" in (refused.value.details() or "")


def test_a_repeated_key_is_one_clear_400_everywhere(
    http: httpx.Client, redis_client: redis.Redis, admin: identity.Account, tenant: str
) -> None:
    event_id = new_event_id()
    body = webhook_with_data('{"k": 1, "k": 2}')
    error = assert_error(COURIER.deliver(http, body, event_id=event_id), 400, "invalid_argument")
    assert 'repeats the key "k"' in error["message"]
    assert not_enqueued(redis_client, event_id)
    # A transcoded body: once named an internal field (`_customer_ref`).
    customer = identity.customer(http, tenant)
    response = http.post(
        "/v1/orders",
        content=b'{"customerRef": "a", "customerRef": "b"}',
        headers=customer.headers(
            Idempotency_Key=uuid.uuid4().hex, **{"content-type": "application/json"}
        ),
    )
    error = assert_error(response, 400, "invalid_argument")
    assert 'repeats the key "customerRef"' in error["message"]
    assert "_customer_ref" not in response.text
    # The same key spelled with an escape is the same key; the raw key is not echoed.
    response = http.post(
        "/v1/admin/events",
        content=b'{"id": "e\\u0031", "\\u0069d": "e2", "type": "a.b"}',
        headers=admin.headers(**{"content-type": "application/json"}),
    )
    assert_error(response, 400, "invalid_argument")
    listed = http.get("/v1/orders", headers=customer.headers())
    assert listed.json().get("items", []) == []


def test_a_null_array_element_is_400_not_silently_dropped(http: httpx.Client, tenant: str) -> None:
    customer = identity.customer(http, tenant)
    response = http.post(
        "/v1/orders",
        json={"customerRef": "c", "items": [None]},
        headers=customer.headers(Idempotency_Key=uuid.uuid4().hex),
    )
    error = assert_error(response, 400, "invalid_argument")
    assert "null array element" in error["message"]
    assert http.get("/v1/orders", headers=customer.headers()).json().get("items", []) == []


# --- 3. ids that become headers, Redis keys and MongoDB ids ----------------------------


@pytest.mark.parametrize(
    "event_id", ["evt\r\nx-injected: 1", "evt\u0000", "évt", "evt 1", "x" * 256, ""]
)
def test_an_admin_event_id_outside_the_token_pattern_is_400_naming_it(
    http: httpx.Client, redis_client: redis.Redis, admin: identity.Account, event_id: str
) -> None:
    event = {"id": event_id, "source": "courier", **status_event(shipment_id(next(_shipments)))}
    response = http.post("/v1/admin/events", json=event, headers=admin.headers())
    error = assert_error(response, 400, "invalid_argument")
    assert error["message"].startswith("id:"), error
    assert not redis_client.keys(f"events:seen:{COURIER.tenant}:courier:evt*\r*")


@pytest.mark.parametrize("shipment", ["SHP\r\n1", "SHP\u00001", "SHP-é", "SHP 1"])
def test_a_shipment_id_outside_the_token_pattern_is_400_naming_it(
    http: httpx.Client, redis_client: redis.Redis, admin: identity.Account, shipment: str
) -> None:
    event_id = new_event_id()
    response = COURIER.deliver(http, status_event(shipment), event_id=event_id)
    error = assert_error(response, 400, "invalid_argument")
    assert "data.shipmentId" in error["message"]
    assert not_enqueued(redis_client, event_id)
    published = http.post(
        "/v1/admin/events",
        json={"id": new_event_id(), **status_event(shipment)},
        headers=admin.headers(),
    )
    assert "data.shipmentId" in assert_error(published, 400, "invalid_argument")["message"]


# --- 4. event times from the future --------------------------------------------------


def test_an_event_from_the_future_is_400_and_does_not_freeze_its_shipment(
    http: httpx.Client,
    redis_client: redis.Redis,
    mongo: Database[Document],
    admin: identity.Account,
) -> None:
    shipment = shipment_id(next(_shipments))
    frozen, genuine = new_event_id(), new_event_id()
    future = status_event(shipment, "delivered") | {"timestamp": "9999-12-31T23:59:59Z"}
    error = assert_error(COURIER.deliver(http, future, event_id=frozen), 400, "invalid_argument")
    assert error["message"].startswith("timestamp:")
    assert not_enqueued(redis_client, frozen)
    published = http.post(
        "/v1/admin/events", json={"id": new_event_id(), **future}, headers=admin.headers()
    )
    assert_error(published, 400, "invalid_argument")
    # A genuine later event still moves the shipment.
    assert COURIER.deliver(http, status_event(shipment), event_id=genuine).status_code == 202
    done = eventually(lambda: outcome(mongo, COURIER, genuine))
    assert done["status"] == "out_for_delivery"


def test_an_event_within_the_skew_is_accepted(http: httpx.Client) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    event = status_event(shipment_id(next(_shipments))) | {"timestamp": soon}
    assert COURIER.deliver(http, event).status_code == 202


# --- 5. a known id with other content --------------------------------------------------


def test_a_known_webhook_id_with_another_body_is_409_and_enqueues_nothing(
    http: httpx.Client, redis_client: redis.Redis
) -> None:
    event_id, shipment = new_event_id(), shipment_id(next(_shipments))
    first = status_event(shipment, "in_transit")
    assert COURIER.deliver(http, first, event_id=event_id).status_code == 202
    length = redis_client.xlen(STREAM)
    changed = status_event(shipment, "delivered")
    error = assert_error(COURIER.deliver(http, changed, event_id=event_id), 409, "conflict")
    assert event_id in error["message"]
    again = COURIER.deliver(http, first, event_id=event_id)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert redis_client.xlen(STREAM) <= length  # nothing appended (workers may have consumed)


def test_a_known_admin_event_id_with_other_content_is_409(
    http: httpx.Client, admin: identity.Account
) -> None:
    event = {"id": new_event_id(), **status_event(shipment_id(next(_shipments)))}
    assert http.post("/v1/admin/events", json=event, headers=admin.headers()).status_code == 202
    same = http.post("/v1/admin/events", json=event, headers=admin.headers())
    assert same.status_code == 200
    assert same.json()["duplicate"] is True
    other = event | {"type": "shipment.status_corrected"}
    response = http.post("/v1/admin/events", json=other, headers=admin.headers())
    assert_error(response, 409, "conflict")


# --- 2. dead-letter ids and cursors ------------------------------------------------------


def bury(redis_client: redis.Redis, tenant: str, count: int) -> list[str]:
    """Dead letters of `tenant` as the worker writes them; their dead ids."""
    ids = []
    for n in range(count):
        message = Message(
            id=f"courier:evt_dead_{uuid.uuid4().hex}",
            tenant=tenant,
            type="shipment.status_changed",
            payload=json.dumps({"n": n}).encode(),
            enqueued_at_ms=int(time.time() * 1000),
        )
        fields = {**encode(message), "error": b"test", "attempts": b"3", "dead_at_ms": b"1"}
        ids.append(as_text(redis_client.xadd(DEAD, fields)))  # type: ignore[arg-type]
    return ids


@pytest.mark.parametrize(
    "dead_id",
    [
        "18446744073709551616-0",
        "0-18446744073709551616",
        "99999999999999999999-99999999999999999999",
    ],
)
def test_dead_letter_ids_above_64_bits_are_400(
    http: httpx.Client, admin: identity.Account, dead_id: str
) -> None:
    for method, path in (("GET", ""), ("POST", "/replay"), ("DELETE", "")):
        response = http.request(method, f"/v1/admin/dlq/{dead_id}{path}", headers=admin.headers())
        assert_error(response, 400, "invalid_argument")


def test_dead_letter_cursors_are_signed_per_tenant_and_omitted_on_the_last_page(
    http: httpx.Client, platform: State, redis_client: redis.Redis, tenant: str
) -> None:
    own, other = (
        identity.admin(http, platform, tenant),
        identity.admin(http, platform, tenant + "x"),
    )
    buried = bury(redis_client, tenant, 3)
    bury(redis_client, tenant + "x", 3)
    first = http.get("/v1/admin/dlq", params={"limit": 2}, headers=own.headers())
    assert first.status_code == 200, first.text
    cursor = first.json()["nextCursor"]
    assert cursor
    assert cursor not in buried  # opaque, not the raw dead id
    last = http.get("/v1/admin/dlq", params={"limit": 2, "cursor": cursor}, headers=own.headers())
    assert [d["id"] for d in first.json()["items"] + last.json()["items"]] == buried
    assert "nextCursor" not in last.json()
    # Another tenant's admin, an edited cursor, a raw or oversized stream id: refused.
    _, mac = cursor.split(".")
    edited = base64.urlsafe_b64encode(b'{"after":"0-0"}').rstrip(b"=").decode() + "." + mac
    for bad, account in ((cursor, other), (edited, own), (buried[0], own),
                         ("18446744073709551616-0", own)):  # fmt: skip
        response = http.get("/v1/admin/dlq", params={"cursor": bad}, headers=account.headers())
        assert_error(response, 400, "invalid_argument")


def test_a_dead_letter_payload_over_the_limits_is_shown_as_text(
    http: httpx.Client, platform: State, redis_client: redis.Redis, tenant: str
) -> None:
    own = identity.admin(http, platform, tenant)
    message = Message(id="courier:evt_deep", tenant=tenant, type="a.b",
                      payload=nested(200).encode(), enqueued_at_ms=1)  # fmt: skip
    fields = {**encode(message), "error": b"x", "attempts": b"1", "dead_at_ms": b"1"}
    dead_id = as_text(redis_client.xadd(DEAD, fields))  # type: ignore[arg-type]
    response = http.get(f"/v1/admin/dlq/{dead_id}", headers=own.headers())
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == nested(200)
