"""The order pipeline's routes and settings, without servers."""

from __future__ import annotations

import uuid

import pytest

from services.kit.config import ConfigError
from services.kit.streams import Message, Permanent
from services.order.domain import PLACED
from services.order.pipeline.config import PipelineConfig
from services.order.pipeline.handlers import order_of, routes
from services.order.pipeline.steps import Pipeline
from services.order.transitions import CANCEL_REQUESTED

NEEDS = {
    "DATABASE_URL": "postgresql://shop:pw@db:5432/shop",
    "REDIS_URL": "redis://:pw@redis:6379/0",
    "INVENTORY_GRPC_TARGET": "inventory:7062",
    "PAYMENTS_URL": "http://payments:8104",
}


def test_every_event_type_the_order_outbox_writes_is_routed() -> None:
    router = routes(Pipeline(None, None, None))  # type: ignore[arg-type]
    written = {f"orders.{status}" for status in PLACED} | {CANCEL_REQUESTED}
    written |= {"orders.placed", "orders.closed"}
    assert written <= set(router.types)
    assert router.handler_for("orders.shipped") is None  # unknown: dead-lettered at once


def test_a_status_event_names_its_order_of_the_message_tenant() -> None:
    order = uuid.uuid4()
    payload = f'{{"orderId":"{order}","tenantId":"t1","toStatus":"reserved"}}'.encode()
    assert order_of(Message("m1", "t1", "orders.reserved", payload)) == order
    with pytest.raises(Permanent):
        order_of(Message("m1", "t2", "orders.reserved", payload))
    with pytest.raises(Permanent):
        order_of(Message("m1", "t1", "orders.reserved", b'{"orderId":"nope"}'))
    with pytest.raises(Permanent):
        order_of(Message("m1", "t1", "orders.reserved", b"not json"))


def test_the_config_takes_its_needs_and_defaults() -> None:
    config = PipelineConfig.from_env({**NEEDS, "ORDER_PIPELINE_NAME": "order-pipeline-2"})
    assert (config.queue, config.worker.consumer, config.currency) == (
        "orders",
        "order-pipeline-2",
        "EUR",
    )
    assert config.payments.deadline_s < config.worker.handler_timeout_s
    assert config.reconciler.pending_grace_s > config.worker.visibility_timeout_s
    with pytest.raises(ConfigError):
        PipelineConfig.from_env({k: v for k, v in NEEDS.items() if k != "PAYMENTS_URL"})
