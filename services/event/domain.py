"""Courier events: what a webhook body must hold, and the form kept on the queue.

A courier sends `{"type": "shipment.status_changed", "timestamp": "...",
"data": {"shipmentId": "SHP-1", "status": "out_for_delivery", ...}}`. The
gateway validates it before acknowledging (a sender must learn at once that a
body can never succeed), then queues the event with its source, id and
receive time; the worker reads it back with `from_payload`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.kit import errors, jsonlimits
from services.kit.encoding import utc_rfc3339

EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,4}")
SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
STATUS = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Ids become Redis keys, MongoDB ids and the worker's Idempotency-Key header:
# printable ASCII tokens only, so no CR/LF, NUL or non-ASCII byte can make an
# accepted event impossible to process.
EVENT_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,255}")
SHIPMENT_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


def _parse_time(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidArgument.field(name, "must be an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise errors.InvalidArgument.field(name, "must carry a UTC offset (e.g. Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-01:00 is in year 10000 in UTC
        raise errors.InvalidArgument.field(name, "is out of range") from None


def format_time(moment: datetime) -> str:
    return utc_rfc3339(moment, timespec="milliseconds")


@dataclass(frozen=True)
class CourierEvent:
    """One accepted event, as queued and as processed."""

    source: str
    id: str
    type: str
    shipment_id: str
    status: str
    occurred_at: datetime
    received_at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The event's identity within its tenant: one effect per key."""
        return f"{self.source}:{self.id}"

    def to_payload(self) -> bytes:
        return json.dumps(
            {
                "source": self.source,
                "id": self.id,
                "type": self.type,
                "occurredAt": format_time(self.occurred_at),
                "receivedAt": format_time(self.received_at),
                "data": self.data,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> CourierEvent:
        """The event of a queued payload; InvalidArgument when it is not one."""
        body = json.loads(payload)
        data = body["data"]
        return cls(
            source=body["source"],
            id=body["id"],
            type=body["type"],
            shipment_id=_shipment_id(data),
            status=_status(data),
            occurred_at=_parse_time(body["occurredAt"], "occurredAt"),
            received_at=_parse_time(body["receivedAt"], "receivedAt"),
            data=data,
        )


def _shipment_id(data: dict[str, Any]) -> str:
    value = data.get("shipmentId")
    if not isinstance(value, str) or not SHIPMENT_ID.fullmatch(value):
        raise errors.InvalidArgument.field(
            "data.shipmentId", "is required: 1..128 characters of [A-Za-z0-9_.:-]"
        )
    return value


def _status(data: dict[str, Any]) -> str:
    value = data.get("status")
    if not isinstance(value, str) or not STATUS.fullmatch(value):
        raise errors.InvalidArgument.field(
            "data.status", "is required: a lowercase word such as out_for_delivery"
        )
    return value


def parse_event(
    source: str,
    event_id: str,
    body: bytes,
    *,
    signed_at: datetime,
    received_at: datetime,
    latest: datetime,
) -> CourierEvent:
    """Validate a webhook body; InvalidArgument (400) naming what is wrong."""
    return event_of(
        source,
        event_id,
        jsonlimits.loads(body),
        default_time=signed_at,
        received_at=received_at,
        latest=latest,
    )


def event_of(
    source: str,
    event_id: str,
    document: object,
    *,
    default_time: datetime,
    received_at: datetime,
    latest: datetime,
) -> CourierEvent:
    """Validate a decoded event document (a webhook body or a published event).

    An event time after `latest` (now plus the allowed clock skew) is refused:
    the shipment projection only moves forward in event time, so one event
    from the far future would make every later genuine event look older.
    """
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise errors.InvalidArgument.field(
            "id", "is required: 1..255 characters of [A-Za-z0-9_.:-]"
        )
    if not SOURCE_NAME.fullmatch(source):
        raise errors.InvalidArgument.field("source", "must be 1..64 characters of [a-z0-9_-]")
    if not isinstance(document, dict):
        raise errors.InvalidArgument("the body must be a JSON object")
    event_type = document.get("type")
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        raise errors.InvalidArgument.field(
            "type", "is required: dotted lowercase words such as shipment.status_changed"
        )
    data = document.get("data")
    if not isinstance(data, dict):
        raise errors.InvalidArgument.field("data", "is required: a JSON object")
    raw_time = document.get("timestamp")
    if raw_time is None:
        occurred_at = default_time
    elif isinstance(raw_time, str):
        occurred_at = _parse_time(raw_time, "timestamp")
        if occurred_at > latest:
            raise errors.InvalidArgument.field(
                "timestamp", f"is in the future (later than {format_time(latest)})"
            )
    else:
        raise errors.InvalidArgument.field("timestamp", "must be an RFC 3339 timestamp")
    return CourierEvent(
        source=source,
        id=event_id,
        type=event_type,
        shipment_id=_shipment_id(data),
        status=_status(data),
        occurred_at=occurred_at,
        received_at=received_at,
        data=data,
    )
