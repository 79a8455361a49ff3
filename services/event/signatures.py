"""Webhook authenticity per the Standard Webhooks specification.

A delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
`webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` values over
`<id>.<timestamp>.<body>`, signed with a secret written `whsec_<base64>`.
Several signatures let a sender sign with the old and the new secret during a
rotation, and a source may hold several secrets for the same reason; one match
is enough. A timestamp more than the tolerance away from now is refused, so a
captured delivery cannot be replayed later (within the window the event id
deduplicates it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.event.domain import EVENT_ID
from services.kit import errors

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 300
MAX_SIGNATURES = 10
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class InvalidSignature(errors.Unauthenticated):
    """The delivery is not provably from the source; the message says why."""


def generate_secret() -> str:
    """A new random secret in the `whsec_<base64>` form senders and the gateway share."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def decode_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; ValueError when malformed."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret must be whsec_ followed by base64") from exc
    if len(key) < 24:
        raise ValueError("a webhook secret must hold at least 24 bytes")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one delivery (for senders and tests)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Delivery:
    """The signature headers of one webhook request and its body, as received."""

    message_id: str
    timestamp: str
    signature: str
    body: bytes


class Verifier:
    """Checks deliveries against a source's secrets and the clock."""

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        tolerance_s: int = TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("a webhook source needs at least one secret")
        self._secrets = tuple(keys)
        self._tolerance_s = tolerance_s
        self._clock = clock

    def verify(self, delivery: Delivery) -> None:
        """Return when authentic; InvalidSignature saying what is wrong otherwise."""
        if not delivery.message_id or not delivery.timestamp or not delivery.signature:
            raise InvalidSignature(
                "webhook-id, webhook-timestamp and webhook-signature headers are required"
            )
        if not EVENT_ID.fullmatch(delivery.message_id):
            raise InvalidSignature("webhook-id must be 1-255 characters of [A-Za-z0-9_.:-]")
        if not _TIMESTAMP.fullmatch(delivery.timestamp):
            raise InvalidSignature("webhook-timestamp must be Unix seconds")
        timestamp = int(delivery.timestamp)
        if abs(self._clock() - timestamp) > self._tolerance_s:
            raise InvalidSignature(
                f"webhook-timestamp is more than {self._tolerance_s} s from now: "
                "a stale or replayed delivery"
            )
        offered = [
            part.removeprefix("v1,")
            for part in delivery.signature.split()[:MAX_SIGNATURES]
            if part.startswith("v1,")
        ]
        if not offered:
            raise InvalidSignature("webhook-signature holds no v1 signature")
        expected = [
            sign(key, delivery.message_id, timestamp, delivery.body).removeprefix("v1,")
            for key in self._secrets
        ]
        # Every pair is compared in constant time, so timing tells nothing about which failed.
        matched = False
        for candidate in offered:
            for wanted in expected:
                matched |= hmac.compare_digest(candidate.encode(), wanted.encode())
        if not matched:
            raise InvalidSignature("no webhook-signature matches the body")
