"""Standard Webhooks verification, courier event validation and the sources setting."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest

from services.event.config import parse_sources
from services.event.domain import CourierEvent, parse_event
from services.event.signatures import Delivery, InvalidSignature, Verifier, decode_secret, sign
from services.kit import errors
from services.kit.config import ConfigError

NOW = 1_800_000_000
KEY = b"k" * 32
OTHER = b"o" * 32
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = b'{"type": "shipment.status_changed", "data": {"shipmentId": "SHP-1", "status": "x"}}'


def verifier(*keys: bytes) -> Verifier:
    return Verifier(keys or (KEY,), clock=lambda: NOW)


def delivery(
    body: bytes = BODY, *, ts: int = NOW, key: bytes = KEY, mid: str = "msg_1"
) -> Delivery:
    return Delivery(mid, str(ts), sign(key, mid, ts, body), body)


def test_the_spec_example_signature() -> None:
    # The example of the Standard Webhooks specification.
    key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_an_authentic_delivery_passes() -> None:
    verifier().verify(delivery())


def test_any_of_several_secrets_and_signatures_passes() -> None:
    verifier(OTHER, KEY).verify(delivery())
    good = delivery()
    both = Delivery(good.message_id, good.timestamp, f"v1,AAAA {good.signature}", good.body)
    verifier().verify(both)


@pytest.mark.parametrize(
    ("tampered", "reason"),
    [
        (delivery(key=OTHER), "no webhook-signature matches"),
        (Delivery("msg_1", str(NOW), delivery().signature, BODY + b" "), "no webhook-signature"),
        (delivery(ts=NOW - 301), "stale or replayed"),
        (delivery(ts=NOW + 301), "stale or replayed"),
        (Delivery("msg_1", str(NOW), "v2,abc", BODY), "no v1 signature"),
        (Delivery("", str(NOW), "v1,abc", BODY), "headers are required"),
        (Delivery("msg 1", str(NOW), "v1,abc", BODY), "webhook-id must be"),
        (Delivery("msg_1", "12.5", "v1,abc", BODY), "Unix seconds"),
    ],
)
def test_unauthentic_deliveries_are_refused(tampered: Delivery, reason: str) -> None:
    with pytest.raises(InvalidSignature, match=reason) as caught:
        verifier().verify(tampered)
    assert isinstance(caught.value, errors.Unauthenticated)


def test_the_edge_of_the_window_is_accepted() -> None:
    verifier().verify(delivery(ts=NOW - 300))
    verifier().verify(delivery(ts=NOW + 300))


def test_malformed_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        decode_secret("whsec_not base64!")
    with pytest.raises(ValueError, match="24 bytes"):
        decode_secret("whsec_" + base64.b64encode(b"short").decode())


def test_a_webhook_body_becomes_an_event_and_back() -> None:
    signed = datetime.fromtimestamp(NOW, UTC)
    event = parse_event(
        "courier", "msg_1", BODY, signed_at=signed, received_at=signed, latest=signed
    )
    assert (event.key, event.shipment_id, event.status) == ("courier:msg_1", "SHP-1", "x")
    assert event.occurred_at == signed  # no timestamp in the body: the signing time
    assert CourierEvent.from_payload(event.to_payload()) == event


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"type": "x", "data": {}}', b'{"type": "a.b", "data": []}',
     b'{"type": "a.b", "data": {"shipmentId": "S", "status": "x"}, "timestamp": "noon"}',
     b'{"type": "a.b", "data": {"shipmentId": "S", "status": NaN}}'],
)  # fmt: skip
def test_malformed_bodies_are_invalid_arguments(body: bytes) -> None:
    signed = datetime.fromtimestamp(NOW, UTC)
    with pytest.raises(errors.InvalidArgument):
        parse_event("courier", "msg_1", body, signed_at=signed, received_at=signed, latest=signed)


def test_sources_setting() -> None:
    sources = parse_sources(json.dumps({"courier": {"tenant": "demo", "secrets": [SECRET]}}))
    assert sources["courier"].tenant == "demo"
    sources["courier"].verifier.verify(delivery(ts=int(time.time())))
    for bad in ("[]", "{}", '{"Courier!": {"tenant": "demo", "secrets": ["x"]}}',
                '{"c": {"tenant": "demo"}}', '{"c": {"tenant": "demo", "secrets": []}}',
                '{"c": {"tenant": "demo", "secrets": ["whsec_!!"]}}',
                '{"c": {"tenant": "no tenant", "secrets": ["' + SECRET + '"]}}'):  # fmt: skip
        with pytest.raises(ConfigError):
            parse_sources(bad)
