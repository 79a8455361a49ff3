"""Seed 001's `orders.closed` event from the REST API to a Redis stream.

Closing an order through the edge writes one outbox row with the seed's
fields; the platform's outbox relay (`python -m services.relay`, started by the
launcher from the topology) publishes it to the `orders` stream and sets
`published_at`. The platform's order pipeline consumes that stream (and a
consumed entry is deleted once acked), so the test watches the stream with a
blocking XREAD, which sees each entry as it is appended, whoever takes it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime
from typing import Any

import redis
import sqlalchemy as sa
from google.protobuf import json_format
from shop.order.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.launcher.platform import State
from services.relay.config import ROUTES, parse_routes
from tests.e2e.conftest import Api

Fields = dict[bytes, bytes]
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


async def _row(engine: AsyncEngine, order_id: str) -> sa.RowMapping:
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.text(
                "SELECT id, event_type, order_id, tenant_id, payload, published_at,"
                " aggregate_type, aggregate_id, traceparent FROM outbox WHERE order_id = :id"
            ),
            {"id": order_id},
        )
        return result.mappings().one()


def _last_id(client: redis.Redis, stream: str) -> bytes:
    info: Any = client.xinfo_stream(stream) if client.exists(stream) else {}
    last: bytes = info.get("last-generated-id", b"0-0")
    return last


def _watch(
    client: redis.Redis, stream: str, after: bytes, order_id: str, timeout_s: float
) -> list[Fields]:
    """The entries appended to `stream` after the id `after` for `order_id` within
    `timeout_s` (blocking XREADs, so an entry a consumer deletes at once is seen too
    while one is waiting; `after` is taken before the change, so a watcher that starts
    late still reads what is left)."""
    last = after
    found: list[Fields] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not found:
        reply: Any = client.xread({stream: last}, block=200)
        for _, entries in reply or ():
            for entry_id, fields in entries:
                last = entry_id
                if json.loads(fields[b"payload"]).get("orderId") == order_id:
                    found.append(fields)
    return found


async def test_a_closed_order_reaches_the_orders_stream_and_is_marked_published(
    platform: State, api: Api, engine: AsyncEngine, redis_client: redis.Redis
) -> None:
    order = api.draft()
    api.confirm(order["id"], 1, 4200)
    stream = f"queue:{parse_routes(ROUTES)['order']}"
    after = _last_id(redis_client, stream)
    watching = asyncio.create_task(
        asyncio.to_thread(_watch, redis_client, stream, after, order["id"], 20)
    )
    await asyncio.sleep(0.5)  # the watcher's XREAD is waiting before the event exists
    closed = api.close(order["id"]).json()

    row = await _row(engine, order["id"])
    assert (row["event_type"], str(row["order_id"]), row["tenant_id"]) == (
        "orders.closed",
        order["id"],
        api.tenant,
    )
    assert (row["aggregate_type"], row["aggregate_id"]) == ("order", order["id"])
    assert set(row["payload"]) == {"orderId", "tenantId", "totalCents", "closedAt"}
    assert (row["payload"]["orderId"], row["payload"]["tenantId"]) == (order["id"], api.tenant)
    assert row["payload"]["totalCents"] == 4200
    assert _instant(row["payload"]["closedAt"]) == _instant(closed["closedAt"])
    assert TRACEPARENT.match(row["traceparent"]), row["traceparent"]

    deadline = time.monotonic() + 20
    while (await _row(engine, order["id"]))["published_at"] is None:
        assert time.monotonic() < deadline, "the platform's relay did not publish the row"
        await asyncio.sleep(0.05)

    entries = [fields for fields in await watching if fields[b"id"] == str(row["id"]).encode()]
    assert len(entries) == 1
    (entry,) = entries
    assert (entry[b"type"], entry[b"tenant"]) == (b"orders.closed", api.tenant.encode())
    # The writer's trace, one span on: the relay's producer span (the consumer's parent).
    published_trace = entry[b"traceparent"].decode().split("-")
    assert published_trace[1] == row["traceparent"].split("-")[1]
    assert published_trace[2] != row["traceparent"].split("-")[2]
    assert json.loads(entry[b"payload"]) == row["payload"]
    event = json_format.Parse(entry[b"payload"], events_pb2.OrderClosed())
    assert (event.order_id, event.tenant_id, event.total_cents) == (order["id"], api.tenant, 4200)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
