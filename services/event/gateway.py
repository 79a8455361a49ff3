"""Ingestion use cases: authenticate, validate, deduplicate and enqueue, nothing slow.

The only I/O on this path is one Redis round trip (a script that sets the
event's dedupe key and appends to the stream only if the key was new), so an
acknowledgement means the event is in Redis and a duplicate never reaches the
stream twice. When Redis cannot answer, the caller gets Unavailable (503),
never a false acknowledgement.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from services.event.config import WebhookSource
from services.event.domain import SOURCE_NAME, CourierEvent, event_of, parse_event
from services.event.signatures import Delivery, InvalidSignature
from services.kit import errors
from services.kit.streams import Message, Queue

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


class EventGateway:
    """Accepts signed webhooks and internal events onto the events queue."""

    def __init__(
        self,
        queue: Queue,
        sources: Mapping[str, WebhookSource],
        default_source: str,
        max_body_bytes: int,
    ) -> None:
        self._queue = queue
        self._sources = sources
        self._default_source = default_source
        self._max_body_bytes = max_body_bytes

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
        )
        return await self._enqueue(source.tenant, event)

    async def publish(
        self,
        tenant: str,
        event_id: str,
        source: str,
        document: dict[str, Any],
    ) -> Accepted:
        """An event from an internal caller, already authenticated by its token."""
        source = source or INTERNAL_SOURCE
        if not SOURCE_NAME.fullmatch(source):
            raise errors.InvalidArgument.field("source", "must be lowercase [a-z0-9_-]")
        if not event_id or len(event_id) > 255:
            raise errors.InvalidArgument.field("id", "is required: 1..255 characters")
        now = datetime.now(UTC)
        event = event_of(source, event_id, document, default_time=now, received_at=now)
        return await self._enqueue(tenant, event)

    async def _enqueue(self, tenant: str, event: CourierEvent) -> Accepted:
        message = Message(id=event.key, tenant=tenant, type=event.type, payload=event.to_payload())
        try:
            _, duplicate = await self._queue.publish_once(message, dedupe_key(tenant, event))
        except (RedisError, OSError) as exc:
            log.warning("event queue unavailable", extra={"error": str(exc)})
            raise errors.Unavailable("the event queue cannot take events now; retry") from None
        log.debug(
            "event accepted",
            extra={"source": event.source, "event_id": event.id, "duplicate": duplicate},
        )
        return Accepted(source=event.source, id=event.id, duplicate=duplicate)
