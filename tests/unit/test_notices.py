"""What a customer is told about their order, and how the notifier sends and retries it."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import UTC, datetime

import pytest

from services.kit.config import ConfigError
from services.order.domain import Order, OrderStatus
from services.order.notices import Notification, notice_for
from services.order.notifier.config import DeliveryConfig, NotifierConfig
from services.order.notifier.delivery import (
    FAILED,
    RETRY,
    SENT,
    Notifier,
    Outcome,
    message_of,
    settle,
)

ORDER_ID = uuid.UUID("1b2c3d4e-0000-4000-8000-000000000001")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _order(status: OrderStatus, **changes: object) -> Order:
    order = Order(
        id=ORDER_ID,
        tenant_id="t",
        user_id="u-1",
        status=status,
        version=2,
        total_cents=2500,
        created_at=NOW,
        updated_at=NOW,
        closed_at=None,
        customer_ref=None,
        items=(),
    )
    return dataclasses.replace(order, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "kind", "subject", "body"),
    [
        (
            OrderStatus.RESERVED,
            "order.placed",
            "Order 1b2c3d4e received",
            f"We have your order {ORDER_ID} for 25.00. We will tell you when it is paid.",
        ),
        (OrderStatus.PENDING, "order.placed", "Order 1b2c3d4e received", None),
        (
            OrderStatus.PAID,
            "order.paid",
            "Order 1b2c3d4e paid",
            f"Your payment of 25.00 for {ORDER_ID} went through.",
        ),
        (
            OrderStatus.FULFILLED,
            "order.fulfilled",
            "Order 1b2c3d4e is on its way",
            f"Order {ORDER_ID} has been fulfilled.",
        ),
        (
            OrderStatus.CANCELLED,
            "order.cancelled",
            "Order 1b2c3d4e cancelled",
            f"Order {ORDER_ID} was cancelled.",
        ),
        (
            OrderStatus.REFUNDED,
            "order.refunded",
            "Order 1b2c3d4e refunded",
            f"We refunded 25.00 for order {ORDER_ID}.",
        ),
    ],
)
def test_each_status_worth_telling_has_its_notice(
    status: OrderStatus, kind: str, subject: str, body: str | None
) -> None:
    notice = notice_for(_order(status))
    assert notice is not None
    assert (notice.kind, notice.subject, notice.channel) == (kind, subject, "email")
    if body is not None:
        assert notice.body == body


def test_a_failed_order_says_why_in_words() -> None:
    notice = notice_for(_order(OrderStatus.FAILED, failure_reason="payment_declined"))
    assert notice is not None
    assert notice.body == f"Order {ORDER_ID} failed: payment declined."
    unknown = notice_for(_order(OrderStatus.FAILED))
    assert unknown is not None
    assert unknown.body.endswith("failed: unknown.")


@pytest.mark.parametrize("status", [OrderStatus.DRAFT, OrderStatus.CONFIRMED, OrderStatus.CLOSED])
def test_drafts_tell_nothing(status: OrderStatus) -> None:
    assert notice_for(_order(status)) is None


def _notification(channel: str) -> Notification:
    return Notification(
        id=uuid.uuid4(),
        tenant_id="t",
        user_id="u-1",
        order_id=ORDER_ID,
        kind="order.paid",
        channel=channel,
        subject="Order paid",
        body="Paid.",
        status="pending",
        attempts=1,
        created_at=NOW,
        sent_at=None,
    )


def test_the_message_goes_to_the_platform_user_and_an_sms_has_no_subject() -> None:
    assert message_of(_notification("email")) == {
        "channel": "email",
        "to": "user:u-1",
        "subject": "Order paid",
        "body": "Paid.",
    }
    assert message_of(_notification("sms")) == {"channel": "sms", "to": "user:u-1", "body": "Paid."}


def test_a_transient_failure_is_retried_until_the_last_attempt() -> None:
    config = DeliveryConfig(max_attempts=3)
    assert settle(Outcome(RETRY, "503"), 1, config) == RETRY
    assert settle(Outcome(RETRY, "503"), 3, config) == FAILED
    assert settle(Outcome(FAILED, "HTTP 400"), 1, config) == FAILED
    assert settle(Outcome(SENT), 3, config) == SENT


def test_the_backoff_doubles_up_to_its_cap() -> None:
    config = DeliveryConfig(retry_base_s=1, retry_cap_s=5)
    notifier = Notifier(None, None, config, rng=random.Random(7))  # type: ignore[arg-type]
    waits = [notifier.backoff(n).total_seconds() for n in range(1, 8) for _ in range(50)]
    assert all(0 <= w <= 5 for w in waits)
    assert max(notifier.backoff(1).total_seconds() for _ in range(50)) <= 1


ENV = {"DATABASE_URL": "postgresql://x/db", "NOTIFY_URL": "http://notify:8105"}


def test_the_config_reads_its_settings() -> None:
    config = NotifierConfig.from_env(
        {**ENV, "NOTIFIER_BATCH": "4", "NOTIFIER_MAX_ATTEMPTS": "2", "NOTIFIER_NAME": "n-1"}
    )
    assert (config.delivery.batch, config.delivery.max_attempts, config.name) == (4, 2, "n-1")
    assert config.notify.max_connections == 4
    assert config.notify.deadline_s < config.delivery.lease_s


@pytest.mark.parametrize(
    "settings",
    [
        {"NOTIFIER_LEASE_S": "5", "NOTIFY_DEADLINE_S": "5"},
        {"NOTIFIER_BATCH": "0"},
        {"NOTIFIER_MAX_ATTEMPTS": "0"},
        {"NOTIFIER_RETRY_BASE_S": "10", "NOTIFIER_RETRY_CAP_S": "1"},
    ],
)
def test_a_config_that_cannot_work_is_refused(settings: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        NotifierConfig.from_env({**ENV, **settings})
