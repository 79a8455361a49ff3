"""Routing by message type and the middleware chain, without Redis; the event worker's routes."""

from __future__ import annotations

import re

import pytest
from redis.asyncio import Redis

from services.event.worker import routes
from services.kit.config import ConfigError
from services.kit.streams import (
    Handler,
    Message,
    Middleware,
    Permanent,
    Queue,
    Router,
    UnknownMessageType,
    Worker,
    WorkerConfig,
)
from services.kit.streams.middleware import chain


def typed(message_type: str) -> Message:
    return Message(id="m-1", tenant="acme", type=message_type, payload=b"{}")


def named(name: str, calls: list[str]) -> Handler:
    async def handle(message: Message) -> None:
        calls.append(f"{name} {message.type}")

    return handle


async def test_a_route_and_a_decorated_handler_each_take_their_type() -> None:
    calls: list[str] = []
    router = Router()
    closed = named("closed", calls)
    assert router.route("orders.closed", closed) is closed

    @router.route("orders.paid")
    async def paid(message: Message) -> None:
        calls.append(f"paid {message.type}")

    await router(typed("orders.paid"))
    await router(typed("orders.closed"))
    assert calls == ["paid orders.paid", "closed orders.closed"]
    assert router.types == ("orders.closed", "orders.paid")
    assert router.handler_for("orders.paid") is paid


async def test_an_exact_type_wins_over_a_pattern_and_patterns_go_in_order() -> None:
    calls: list[str] = []
    router = Router()
    router.route_matching(r"orders\..+", named("any order", calls))
    router.route_matching(re.compile(r"orders\.closed|shipment\..+"), named("second", calls))
    router.route("orders.closed", named("closed", calls))

    for message_type in ("orders.closed", "orders.paid", "shipment.delivered"):
        await router(typed(message_type))
    assert calls == [
        "closed orders.closed",
        "any order orders.paid",
        "second shipment.delivered",
    ]
    assert router.patterns == (r"orders\..+", r"orders\.closed|shipment\..+")


async def test_a_pattern_must_match_the_whole_type() -> None:
    router = Router()
    router.route_matching(r"orders\.[a-z]+", named("orders", []))
    assert router.handler_for("orders.closed.v2") is None
    assert router.handler_for("legacy.orders.closed") is None


async def test_a_type_nobody_routes_is_a_permanent_failure_naming_the_type() -> None:
    router = Router()
    router.route("orders.closed", named("closed", []))
    router.route_matching(r"shipment\..+", named("shipment", []))
    with pytest.raises(UnknownMessageType) as raised:
        await router(typed("orders.reopened"))
    assert isinstance(raised.value, Permanent)  # dead-lettered at once, never retried
    assert str(raised.value) == (
        "no handler for message type 'orders.reopened' on this worker "
        r"(it takes 'orders.closed', /shipment\..+/)"
    )


def test_routing_a_type_or_a_pattern_twice_is_refused() -> None:
    router = Router()
    router.route("orders.closed", named("first", []))
    with pytest.raises(ConfigError, match=r"'orders\.closed' is routed twice"):
        router.route("orders.closed", named("second", []))
    with pytest.raises(ConfigError, match="routed twice"):

        @router.route("orders.closed")
        async def third(message: Message) -> None:
            pass

    router.route_matching(r"shipment\..+", named("first", []))
    with pytest.raises(ConfigError, match=r"pattern .* is routed twice"):
        router.route_matching(re.compile(r"shipment\..+"), named("second", []))
    with pytest.raises(ConfigError, match="needs a message type"):
        router.route("", named("nameless", []))


def test_a_worker_refuses_a_router_that_routes_nothing() -> None:
    queue = Queue(Redis(), "empty")  # never connects: refused before any I/O
    with pytest.raises(ConfigError, match="routes no message type"):
        Worker(queue, Router(), WorkerConfig(consumer="c-1"))
    assert Worker(queue, named("all", []), WorkerConfig(consumer="c-1")).router is None


async def test_the_chain_runs_its_layers_in_order_outermost_first() -> None:
    calls: list[str] = []

    def layer(name: str) -> Middleware:
        async def around(message: Message, next_: Handler) -> None:
            calls.append(f"{name} in")
            await next_(message)
            calls.append(f"{name} out")

        return around

    await chain(named("handler", calls), [layer("a"), layer("b"), layer("c")])(typed("x.y"))
    assert calls == ["a in", "b in", "c in", "handler x.y", "c out", "b out", "a out"]


@pytest.mark.parametrize(
    "message_type", ["shipment.status_changed", "shipment.status_corrected", "a.b", "x.y.z.w.v"]
)
async def test_the_event_worker_routes_every_type_the_intake_accepts(message_type: str) -> None:
    calls: list[str] = []
    await routes(named("courier", calls))(typed(message_type))
    assert calls == [f"courier {message_type}"]


@pytest.mark.parametrize("message_type", ["Shipment Status", "shipment", "", "a.b.c.d.e.f"])
async def test_the_event_worker_dead_letters_a_type_the_intake_refuses(message_type: str) -> None:
    with pytest.raises(UnknownMessageType, match="no handler for message type"):
        await routes(named("courier", []))(typed(message_type))
