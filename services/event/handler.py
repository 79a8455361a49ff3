"""Processing one courier event: context from MongoDB, a routing decision, its record.

The effect of an event is its outcome document in `event_outcomes`, whose `_id`
is the tenant and event key: inserting it is both the effect and the
processed-record, so a second delivery, a racing worker or a worker that died
after the insert and before the ack cannot record it twice. The shipment's
current status and route are a projection of outcomes, applied with a guard on
the event time, so re-applying an outcome changes nothing and an older event
never overwrites a newer one. The routing call carries the event key as its
`Idempotency-Key`, so a repeated call returns the same route.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.event.domain import CourierEvent
from services.kit import errors
from services.kit.streams import Defer, Message, Permanent
from services.kit.upstream import Upstream

log = logging.getLogger("shop.event.handler")
Document = dict[str, Any]
# About how long a routing call takes: the least a deferred event waits.
ROUTING_CALL_S = 2.0


class ShipmentUnknown(Exception):
    """The event names a shipment not (yet) in the store: retried, then dead-lettered."""


def outcome_id(tenant: str, event_key: str) -> str:
    return f"{tenant}/{event_key}"


class CourierEventHandler:
    """The events queue's handler, routed every courier event type alike (see
    `services.event.worker.routes`): the event's status, not its type, says what changed."""

    def __init__(self, db: AsyncDatabase[Document], routing: Upstream) -> None:
        self._db = db
        self._routing = routing

    async def __call__(self, message: Message) -> None:
        try:
            event = CourierEvent.from_payload(message.payload)
        except (ValueError, KeyError, TypeError, errors.InvalidArgument) as exc:
            raise Permanent(f"not a courier event: {exc}") from exc
        key = outcome_id(message.tenant, event.key)
        outcome = await self._db.event_outcomes.find_one({"_id": key})
        if outcome is None:
            outcome = await self._decide(message, event, key)
        await self._project(outcome)

    async def _decide(self, message: Message, event: CourierEvent, key: str) -> Document:
        tenant = message.tenant
        shipment = await self._db.shipments.find_one({"_id": f"{tenant}/{event.shipment_id}"})
        if shipment is None:
            # The shipment may not have reached this store yet: retry before giving up.
            raise ShipmentUnknown(f"shipment {event.shipment_id} is not known")
        order = None
        if shipment.get("active_order_id"):
            order = await self._db.active_orders.find_one(
                {"_id": f"{tenant}/{shipment['active_order_id']}", "status": "active"}
            )
        route = await self._route(tenant, key, event, shipment, order)
        outcome: Document = {
            "_id": key,
            "tenant": tenant,
            "source": event.source,
            "event_id": event.id,
            "type": event.type,
            "shipment_id": event.shipment_id,
            "order_id": order["order_id"] if order else None,
            "status": event.status,
            "route": route,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
            "processed_at": datetime.now(UTC),
            "attempts": message.attempt + 1,
        }
        try:
            await self._db.event_outcomes.insert_one(outcome)
        except DuplicateKeyError:
            # Another delivery of this event recorded it first: that one counts.
            found = await self._db.event_outcomes.find_one({"_id": key})
            if found is None:
                raise
            return found
        log.info(
            "event processed",
            extra={"event": key, "shipment": event.shipment_id, "route": route.get("route_id")},
        )
        return outcome

    async def _route(
        self,
        tenant: str,
        key: str,
        event: CourierEvent,
        shipment: Document,
        order: Document | None,
    ) -> Document:
        try:
            response = await self._routing.request(
                "POST",
                "/routes",
                json={
                    "shipment_id": event.shipment_id,
                    "order_id": order["order_id"] if order else None,
                    "event_type": event.type,
                    "status": event.status,
                    "destination": shipment["destination"],
                    "priority": order["priority"] if order else "standard",
                },
                headers={"Idempotency-Key": key, "X-Tenant-Id": tenant},
                idempotent=True,
            )
        except errors.CircuitOpen as exc:
            # Routing is down for every event, not failing for this one: wait for the
            # breaker's next probe without spending an attempt.
            # While the breaker's one probe is out, "retry in 0 s": wait a routing call.
            wait_s = max(float(exc.metadata.get("retry_after_s", "0")), ROUTING_CALL_S)
            raise Defer(wait_s, str(exc)) from exc
        if response.status_code >= 400:
            # A refusal of this request (not an outage, which raised): retrying repeats it.
            raise Permanent(
                f"routing refused the event: HTTP {response.status_code} {response.text}"
            )
        route: Document = response.json()
        return route

    async def _project(self, outcome: Document) -> None:
        """The shipment's status and route from this outcome, unless a newer one applied."""
        # The guard compares integers (epoch ms), and each filter has one condition
        # besides the id: datetimes and `$or` in update filters are where
        # MongoDB-compatible stores differ most.
        when_ms = int(outcome["occurred_at"].timestamp() * 1000)
        shipment = f"{outcome['tenant']}/{outcome['shipment_id']}"
        change = {
            "$set": {
                "status": outcome["status"],
                "route": outcome["route"],
                "last_event_ms": when_ms,
                "last_event": outcome["_id"],
            }
        }
        newer = {"_id": shipment, "last_event_ms": {"$lt": when_ms}}
        first = {"_id": shipment, "last_event_ms": {"$exists": False}}
        # Newer than the last applied; else the shipment's first event; else another
        # first event won that race just now, so compare with it.
        for guard in (newer, first, newer):
            if (await self._db.shipments.update_one(guard, change)).matched_count:
                return
