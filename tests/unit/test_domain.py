"""Order rules without any server: transitions, the version check, totals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.kit import errors
from services.kit.errors import StaleVersion
from services.order.domain import LineItem, NewOrder, Order, OrderStatus

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def _order(
    status: OrderStatus = OrderStatus.DRAFT, version: int = 1, items: tuple[LineItem, ...] = ()
) -> Order:
    return Order(uuid.uuid4(), "t", "u", status, version, None, NOW, NOW, None, None, items)


def test_only_a_draft_can_be_confirmed_and_only_with_its_version() -> None:
    assert _order().confirm(1, 10).status is OrderStatus.CONFIRMED
    with pytest.raises(StaleVersion):
        _order(version=2).confirm(1, 10)
    with pytest.raises(errors.InvalidTransition):
        _order(OrderStatus.CONFIRMED).confirm(1, 10)


def test_only_a_confirmed_order_can_be_closed() -> None:
    assert _order(OrderStatus.CONFIRMED).close(None).status is OrderStatus.CLOSED
    for status in (OrderStatus.DRAFT, OrderStatus.CLOSED):
        with pytest.raises(errors.InvalidTransition):
            _order(status).close(None)


def test_the_total_follows_the_items() -> None:
    order = _order(items=(LineItem("a", 3, 100),))
    assert order.confirm(1, None).total_cents == 300
    with pytest.raises(errors.InvalidArgument):
        order.confirm(1, 299)


def test_a_snapshot_round_trips() -> None:
    order = _order(OrderStatus.CONFIRMED, 2, (LineItem("a", 1, 5),))
    assert Order.from_json(order.to_json()) == order


def test_new_orders_are_validated() -> None:
    with pytest.raises(errors.InvalidArgument):
        NewOrder(None, tuple(LineItem("a", 1, 1) for _ in range(101)))
    with pytest.raises(errors.InvalidArgument):
        NewOrder(None, (LineItem("a", 10_000, 2**31 - 1),))
