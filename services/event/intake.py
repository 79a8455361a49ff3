"""Ingestion use cases: authenticate, validate, deduplicate and enqueue, nothing slow.

The only I/O on this path is one Redis round trip (a script that sets the
event's dedupe key with the content's digest and appends to the stream only if
the key was new), so an acknowledgement means the event is in Redis and a
duplicate never reaches the stream twice. Concurrent deliveries share that round
trip (the kit's `PublishCoalescer`: one pipeline, each its own script reply). When Redis cannot answer, the caller gets Unavailable (503),
never a false acknowledgement.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import RedisError

from services.event.config import WebhookSource
from services.event.domain import CourierEvent, event_of, parse_event
from services.event.signatures import Delivery, InvalidSignature
from services.kit import errors, jsonlimits
from services.kit.streams import Message, OncePublisher

log = logging.getLogger("shop.event")
INTERNAL_SOURCE = "internal"


@dataclass(frozen=True)
class Accepted:
    """The acknowledgement of one event."""

    source: str
    id: str
    duplicate: bool


def dedupe_key(tenant: str, event: CourierEvent) -> str:
    return f"events:seen:{tenant}:{event.key}"


class EventIntake:
    """Accepts signed webhooks and internal events onto the events queue.

    The dedupe key of an event keeps a digest of what was accepted under its
    id (a webhook's body, a published event's fields): the same id again with
    the same content is a duplicate (200), with other content a conflict (409),
    and nothing is enqueued either way.
    """

    def __init__(
        self,
        publisher: OncePublisher,
        sources: Mapping[str, WebhookSource],
        default_source: str,
        max_body_bytes: int,
        *,
        max_future_skew: timedelta = timedelta(minutes=5),
    ) -> None:
        self._publisher = publisher
        self._sources = sources
        self._default_source = default_source
        self._max_body_bytes = max_body_bytes
        self._max_future_skew = max_future_skew

    async def ingest(self, source_name: str, delivery: Delivery) -> Accepted:
        """One webhook delivery: 401 unless authentic, 413 when too big, 400 when malformed."""
        source = self._sources.get(source_name or self._default_source)
        if source is None:
            raise InvalidSignature(f"unknown webhook source {source_name!r}")
        if len(delivery.body) > self._max_body_bytes:
            raise errors.PayloadTooLarge(
                f"the body is {len(delivery.body)} bytes; the limit is {self._max_body_bytes}"
            )
        source.verifier.verify(delivery)
        now = datetime.now(UTC)
        event = parse_event(
            source.name,
            delivery.message_id,
            delivery.body,
            signed_at=datetime.fromtimestamp(int(delivery.timestamp), UTC),
            received_at=now,
            latest=now + self._max_future_skew,
        )
        return await self._enqueue(source.tenant, event, _digest(delivery.body))

    async def publish(
        self,
        tenant: str,
        event_id: str,
        source: str,
        document: dict[str, Any],
    ) -> Accepted:
        """An event from an internal caller, already authenticated by its token."""
        jsonlimits.check(document)
        now = datetime.now(UTC)
        event = event_of(
            source or INTERNAL_SOURCE,
            event_id,
            document,
            default_time=now,
            received_at=now,
            latest=now + self._max_future_skew,
        )
        # The document as given (no defaulted time), so a republish compares equal.
        canonical = json.dumps(
            {"source": event.source, **document}, sort_keys=True, separators=(",", ":")
        )
        return await self._enqueue(tenant, event, _digest(canonical.encode()))

    async def _enqueue(self, tenant: str, event: CourierEvent, digest: str) -> Accepted:
        message = Message(id=event.key, tenant=tenant, type=event.type, payload=event.to_payload())
        try:
            _, duplicate = await self._publisher.publish_once(
                message, dedupe_key(tenant, event), digest=digest
            )
        except errors.IdempotencyKeyReused:
            raise errors.IdempotencyKeyReused(
                f"event {event.id} was already accepted with different content; "
                "send a new event with a new id"
            ) from None
        except (RedisError, OSError) as exc:
            log.warning("event queue unavailable", extra={"error": str(exc)})
            raise errors.Unavailable("the event queue cannot take events now; retry") from None
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "event accepted",
                extra={"source": event.source, "event_id": event.id, "duplicate": duplicate},
            )
        return Accepted(source=event.source, id=event.id, duplicate=duplicate)


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
