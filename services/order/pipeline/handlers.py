"""The `orders` queue's routes: every event type the order outbox writes, to its step.

Each message names one order (`OrderStatusChanged.orderId`); its step works
from the order's current state, not from the message, so a late or repeated
message does nothing wrong. Types that need nothing from the pipeline (the
terminal ones, `orders.cancel_requested`, seed 001's `orders.closed`) are acked
as they come, so nothing lands in the dead letters as of an unknown type.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from google.protobuf import json_format
from shop.order.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.inbox import Inbox
from services.kit.streams import Message, Permanent, Router
from services.kit.uow import UnitOfWork
from services.order.domain import PLACED, OrderStatus
from services.order.events import CLOSED
from services.order.pipeline.steps import Pipeline
from services.order.transitions import CANCEL_REQUESTED
from services.order.transitions import PLACED as ORDER_PLACED

CONSUMER = "order-pipeline"
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


class Applied:
    """Runs a step once per message: skipped when the inbox has it, recorded after."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def __call__(self, step: Step) -> Callable[[Message], Awaitable[None]]:
        async def handle(message: Message) -> None:
            order_id = order_of(message)
            async with self._engine.connect() as conn:
                if await Inbox(conn).applied(CONSUMER, message.id):
                    return
            await step(message.tenant, order_id)
            async with UnitOfWork(self._engine) as work:
                await work.inbox.first_time(CONSUMER, message.id)

        return handle


async def nothing(message: Message) -> None:
    """An event the pipeline has no step for."""


def routes(engine: AsyncEngine, pipeline: Pipeline) -> Router:
    """What the pipeline takes: every event type of the `orders` queue."""
    once = Applied(engine)
    steps: dict[str, Step] = {
        ORDER_PLACED: pipeline.placed,
        f"orders.{OrderStatus.RESERVED}": pipeline.charge,
        f"orders.{OrderStatus.PAID}": pipeline.fulfil,
        f"orders.{OrderStatus.FAILED}": pipeline.failed,
        f"orders.{OrderStatus.CANCELLED}": pipeline.cancelled,
    }
    router = Router()
    for message_type, step in steps.items():
        router.route(message_type, once(step))
    idle = {f"orders.{status}" for status in PLACED} | {CANCEL_REQUESTED, CLOSED}
    for message_type in sorted(idle - set(steps)):
        router.route(message_type, nothing)
    return router
