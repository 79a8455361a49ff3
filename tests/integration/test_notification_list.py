"""ListMyNotifications over native gRPC: the order service on port 0, real PostgreSQL.

Rows are written straight into `notifications` (as order changes write them);
each caller sees only their own, in keyset pages newest first, and a cursor
works only for the user and tenant it was issued to.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import sqlalchemy as sa
from shop.order.v1 import notifications_pb2, notifications_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.order.schema import notifications
from tests.servers import order_config, serving

ADA = "5f0c1a8e-0000-4000-8000-00000000b001"
BOB = "5f0c1a8e-0000-4000-8000-00000000b002"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def stub(postgres_url: str) -> AsyncIterator[notifications_pb2_grpc.NotificationServiceStub]:
    async with serving(order_config(postgres_url)) as (_app, channel):
        yield notifications_pb2_grpc.NotificationServiceStub(channel)


def md(tenant: str, user: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (("x-tenant-id", tenant), ("x-user-id", user), *extra)


async def add(engine: AsyncEngine, tenant: str, user: str, count: int) -> list[uuid.UUID]:
    """`count` notifications of the user, a minute apart (every third one sent); ids
    oldest first."""
    ids = [uuid.uuid4() for _ in range(count)]
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(notifications),
            [
                {
                    "id": i,
                    "tenant_id": tenant,
                    "user_id": user,
                    "order_id": uuid.uuid4() if n % 2 == 0 else None,
                    "kind": "order.paid",
                    "channel": "email",
                    "subject": f"Order {n} paid",
                    "body": f"Notification {n}",
                    "status": "sent" if n % 3 == 0 else "failed",
                    "created_at": START + timedelta(minutes=n),
                    "sent_at": START + timedelta(minutes=n, seconds=1) if n % 3 == 0 else None,
                }
                for n, i in enumerate(ids)
            ],
        )
    return ids


async def test_a_customer_pages_through_their_own_notifications_newest_first(
    stub: notifications_pb2_grpc.NotificationServiceStub, engine: AsyncEngine, tenant: str
) -> None:
    mine = await add(engine, tenant, ADA, 25)
    await add(engine, tenant, BOB, 3)
    await add(engine, f"{tenant}-other", ADA, 2)  # the same user id in another tenant
    seen: list[str] = []
    cursor, sizes = "", []
    while True:
        page = await stub.ListMyNotifications(
            notifications_pb2.ListMyNotificationsRequest(limit=10, cursor=cursor),
            metadata=md(tenant, ADA),
        )
        seen += [n.id for n in page.items]
        sizes.append(len(page.items))
        if not page.HasField("next_cursor"):
            break
        cursor = page.next_cursor
    assert sizes == [10, 10, 5]
    assert seen == [str(i) for i in reversed(mine)]


async def test_a_notification_carries_what_the_customer_was_told(
    stub: notifications_pb2_grpc.NotificationServiceStub, engine: AsyncEngine, tenant: str
) -> None:
    ids = await add(engine, tenant, ADA, 2)
    page = await stub.ListMyNotifications(
        notifications_pb2.ListMyNotificationsRequest(), metadata=md(tenant, ADA)
    )
    newest, oldest = page.items
    assert not page.HasField("next_cursor")
    assert (oldest.id, oldest.kind, oldest.channel, oldest.status) == (
        str(ids[0]),
        "order.paid",
        "email",
        "sent",
    )
    assert (oldest.subject, oldest.body) == ("Order 0 paid", "Notification 0")
    assert oldest.HasField("order_id")
    assert oldest.HasField("sent_at")
    assert oldest.created_at.ToDatetime(UTC) == START
    assert oldest.sent_at.ToDatetime(UTC) == START + timedelta(seconds=1)
    assert (newest.status, newest.HasField("order_id"), newest.HasField("sent_at")) == (
        "failed",
        False,
        False,
    )


async def test_another_users_cursor_is_refused(
    stub: notifications_pb2_grpc.NotificationServiceStub, engine: AsyncEngine, tenant: str
) -> None:
    await add(engine, tenant, ADA, 3)
    await add(engine, tenant, BOB, 3)
    bobs = await stub.ListMyNotifications(
        notifications_pb2.ListMyNotificationsRequest(limit=1), metadata=md(tenant, BOB)
    )
    assert bobs.HasField("next_cursor")
    for who in (md(tenant, ADA), md(f"{tenant}-other", BOB)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListMyNotifications(
                notifications_pb2.ListMyNotificationsRequest(cursor=bobs.next_cursor),
                metadata=who,
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "cursor" in (refused.value.details() or "")
    # An admin's list is their own too: Bob's cursor is not theirs either.
    with pytest.raises(grpc.aio.AioRpcError) as admin:
        await stub.ListMyNotifications(
            notifications_pb2.ListMyNotificationsRequest(cursor=bobs.next_cursor),
            metadata=md(tenant, ADA, ("x-user-role", "admin")),
        )
    assert admin.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_an_admin_sees_only_their_own_notifications(
    stub: notifications_pb2_grpc.NotificationServiceStub, engine: AsyncEngine, tenant: str
) -> None:
    await add(engine, tenant, BOB, 2)
    page = await stub.ListMyNotifications(
        notifications_pb2.ListMyNotificationsRequest(),
        metadata=md(tenant, ADA, ("x-user-role", "admin")),
    )
    assert list(page.items) == []


@pytest.mark.parametrize("limit", [-1, 101])
async def test_a_limit_outside_1_to_100_is_refused(
    stub: notifications_pb2_grpc.NotificationServiceStub, tenant: str, limit: int
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListMyNotifications(
            notifications_pb2.ListMyNotificationsRequest(limit=limit), metadata=md(tenant, ADA)
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_default_page_is_20(
    stub: notifications_pb2_grpc.NotificationServiceStub, engine: AsyncEngine, tenant: str
) -> None:
    await add(engine, tenant, ADA, 21)
    page = await stub.ListMyNotifications(
        notifications_pb2.ListMyNotificationsRequest(), metadata=md(tenant, ADA)
    )
    assert len(page.items) == 20
    assert page.HasField("next_cursor")


async def test_a_tampered_cursor_is_refused(
    stub: notifications_pb2_grpc.NotificationServiceStub, tenant: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListMyNotifications(
            notifications_pb2.ListMyNotificationsRequest(cursor="e30.AAAA"),
            metadata=md(tenant, ADA),
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_call_without_a_user_is_unauthenticated(
    stub: notifications_pb2_grpc.NotificationServiceStub, tenant: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListMyNotifications(
            notifications_pb2.ListMyNotificationsRequest(), metadata=(("x-tenant-id", tenant),)
        )
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
