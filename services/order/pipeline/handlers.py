"""The `orders` queue's routes: every event type the order outbox writes, to its step.

Each message names one order (`OrderStatusChanged.orderId`); its step works
from the order's current state, not from the message, and re-checks it under the
order's row lock before it writes, so a late or repeated message does nothing
wrong: no inbox record is needed (it would cost two more transactions a message). Types that need nothing from the pipeline (the
terminal ones, `orders.cancel_requested`, seed 001's `orders.closed`) are acked
as they come, so nothing lands in the dead letters as of an unknown type.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from google.protobuf import json_format
from shop.order.events.v1 import events_pb2

from services.kit.streams import Message, Permanent, Router
from services.order.domain import PLACED, OrderStatus
from services.order.events import CLOSED
from services.order.pipeline.steps import Pipeline
from services.order.transitions import CANCEL_REQUESTED
from services.order.transitions import PLACED as ORDER_PLACED

Step = Callable[[str, uuid.UUID], Awaitable[None]]


def order_of(message: Message) -> uuid.UUID:
    """The order a status event names; Permanent when it names none of the message's tenant."""
    try:
        event = json_format.Parse(
            message.payload, events_pb2.OrderStatusChanged(), ignore_unknown_fields=True
        )
        order_id = uuid.UUID(event.order_id)
    except (json_format.ParseError, ValueError) as exc:
        raise Permanent(f"not an order status event: {exc}") from exc
    if event.tenant_id != message.tenant:
        raise Permanent("the event's tenant is not the message's")
    return order_id


def applied(step: Step) -> Callable[[Message], Awaitable[None]]:
    """The handler of a message type: the step, on the order the message names."""

    async def handle(message: Message) -> None:
        await step(message.tenant, order_of(message))

    return handle


async def nothing(message: Message) -> None:
    """An event the pipeline has no step for."""


def routes(pipeline: Pipeline) -> Router:
    """What the pipeline takes: every event type of the `orders` queue."""
    steps: dict[str, Step] = {
        ORDER_PLACED: pipeline.placed,
        f"orders.{OrderStatus.RESERVED}": pipeline.charge,
        f"orders.{OrderStatus.PAID}": pipeline.fulfil,
        f"orders.{OrderStatus.FAILED}": pipeline.failed,
        f"orders.{OrderStatus.CANCELLED}": pipeline.cancelled,
    }
    router = Router()
    for message_type, step in steps.items():
        router.route(message_type, applied(step))
    idle = {f"orders.{status}" for status in PLACED} | {CANCEL_REQUESTED, CLOSED}
    for message_type in sorted(idle - set(steps)):
        router.route(message_type, nothing)
    return router
