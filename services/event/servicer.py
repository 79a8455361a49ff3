"""gRPC adapter for the event gateway: metadata and protos in, use case call, protos out."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import json_format, struct_pb2
from shop.event.v1 import event_pb2, event_pb2_grpc

from services.event.deadletters import DeadLetterAdmin
from services.event.intake import Accepted, EventIntake
from services.event.signatures import Delivery
from services.kit import calls, errors, identity, jsonlimits
from services.kit.streams import DeadLetter
from services.kit.wire import timestamp

Context = calls.Context


def _payload(raw: bytes) -> struct_pb2.Value:
    value = struct_pb2.Value()
    try:
        # Under the platform's JSON limits, so what is shown can also be transcoded.
        json_format.ParseDict(jsonlimits.loads(raw), value)
    except (errors.InvalidArgument, json_format.ParseError):
        value.string_value = raw.decode(errors="replace")
    return value


def _time(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def dead_letter_to_proto(queue: str, dead: DeadLetter) -> event_pb2.DeadLetter:
    """The wire form of a dead letter."""
    message = dead.message
    return event_pb2.DeadLetter(
        id=dead.dead_id,
        queue=queue,
        message_id=message.id,
        type=message.type,
        payload=_payload(message.payload),
        attempts=dead.attempts,
        error=dead.error,
        enqueued_at=timestamp(_time(message.enqueued_at_ms)),
        dead_at=timestamp(_time(dead.dead_at_ms)),
    )


class EventServicer(event_pb2_grpc.EventServiceServicer):
    """shop.event.v1.EventService over the gateway and dead-letter use cases."""

    def __init__(self, intake: EventIntake, dead_letters: DeadLetterAdmin) -> None:
        self._intake = intake
        self._dead = dead_letters

    async def _acknowledge(self, context: Context, accepted: Accepted) -> None:
        # The edge answers an accepted event 202 by itself (the route's success status in
        # services/topology.py): only a duplicate's 200 needs a metadata operation.
        if accepted.duplicate:
            await calls.send_headers(context, http_status=200)

    async def IngestWebhook(
        self, request: event_pb2.IngestWebhookRequest, context: Context
    ) -> event_pb2.IngestWebhookResponse:
        message_id, signed_at, signature = calls.headers(
            context, "webhook-id", "webhook-timestamp", "webhook-signature"
        )
        delivery = Delivery(message_id, signed_at, signature, request.http_body.data)
        accepted = await self._intake.ingest(request.source, delivery)
        await self._acknowledge(context, accepted)
        return event_pb2.IngestWebhookResponse(
            id=accepted.id, duplicate=accepted.duplicate, source=accepted.source
        )

    async def PublishEvent(
        self, request: event_pb2.PublishEventRequest, context: Context
    ) -> event_pb2.PublishEventResponse:
        document = {
            "type": request.type,
            "data": json_format.MessageToDict(request.data),
        }
        if request.HasField("timestamp"):
            document["timestamp"] = request.timestamp.ToJsonString()
        accepted = await self._intake.publish(
            identity.tenant(context), request.id, request.source, document
        )
        await self._acknowledge(context, accepted)
        return event_pb2.PublishEventResponse(
            id=accepted.id, duplicate=accepted.duplicate, source=accepted.source
        )

    async def ListDeadLetters(
        self, request: event_pb2.ListDeadLettersRequest, context: Context
    ) -> event_pb2.ListDeadLettersResponse:
        queue = request.queue or self._dead.default
        items, cursor = await self._dead.list(
            identity.tenant(context), queue, request.limit, request.cursor
        )
        response = event_pb2.ListDeadLettersResponse(
            items=[dead_letter_to_proto(queue, d) for d in items]
        )
        if cursor is not None:
            response.next_cursor = cursor
        return response

    async def GetDeadLetter(
        self, request: event_pb2.GetDeadLetterRequest, context: Context
    ) -> event_pb2.DeadLetter:
        queue = request.queue or self._dead.default
        found = await self._dead.get(identity.tenant(context), queue, request.id)
        return dead_letter_to_proto(queue, found)

    async def ReplayDeadLetter(
        self, request: event_pb2.ReplayDeadLetterRequest, context: Context
    ) -> event_pb2.ReplayDeadLetterResponse:
        await self._dead.replay(identity.tenant(context), request.queue, request.id)
        return event_pb2.ReplayDeadLetterResponse(replayed=1)

    async def ReplayDeadLetters(
        self, request: event_pb2.ReplayDeadLettersRequest, context: Context
    ) -> event_pb2.ReplayDeadLettersResponse:
        count = await self._dead.replay_all(identity.tenant(context), request.queue)
        return event_pb2.ReplayDeadLettersResponse(replayed=count)

    async def DeleteDeadLetter(
        self, request: event_pb2.DeleteDeadLetterRequest, context: Context
    ) -> event_pb2.DeleteDeadLetterResponse:
        await self._dead.delete(identity.tenant(context), request.queue, request.id)
        return event_pb2.DeleteDeadLetterResponse(deleted=1)

    async def PurgeDeadLetters(
        self, request: event_pb2.PurgeDeadLettersRequest, context: Context
    ) -> event_pb2.PurgeDeadLettersResponse:
        count = await self._dead.purge(identity.tenant(context), request.queue)
        return event_pb2.PurgeDeadLettersResponse(deleted=count)
