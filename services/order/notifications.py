"""Customers' notifications: GET /v1/users/me/notifications (shop.order.v1.NotificationService)."""

from __future__ import annotations

from shop.order.v1 import notifications_pb2, notifications_pb2_grpc

from services.kit.wire import timestamp
from services.order.notices import Notification
from services.order.notification_usecases import Notifications
from services.order.servicer import Context, caller


def to_proto(notification: Notification) -> notifications_pb2.Notification:
    """The wire form of a notification."""
    msg = notifications_pb2.Notification(
        id=str(notification.id),
        kind=notification.kind,
        channel=notification.channel,
        subject=notification.subject,
        body=notification.body,
        status=notification.status,
        created_at=timestamp(notification.created_at),
    )
    if notification.order_id is not None:
        msg.order_id = str(notification.order_id)
    if notification.sent_at is not None:
        msg.sent_at.CopyFrom(timestamp(notification.sent_at))
    return msg


class NotificationServicer(notifications_pb2_grpc.NotificationServiceServicer):
    """shop.order.v1.NotificationService over the Notifications use cases."""

    def __init__(self, notifications: Notifications) -> None:
        self._notifications = notifications

    async def ListMyNotifications(
        self, request: notifications_pb2.ListMyNotificationsRequest, context: Context
    ) -> notifications_pb2.ListMyNotificationsResponse:
        page = await self._notifications.list_mine(caller(context), request.limit, request.cursor)
        response = notifications_pb2.ListMyNotificationsResponse(
            items=[to_proto(n) for n in page.items]
        )
        if page.next_cursor is not None:
            response.next_cursor = page.next_cursor
        return response
