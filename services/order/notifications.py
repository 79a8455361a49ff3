"""Customers' notifications: GET /v1/users/me/notifications (shop.order.v1.NotificationService)."""

from __future__ import annotations

from shop.order.v1 import notifications_pb2_grpc


class NotificationServicer(notifications_pb2_grpc.NotificationServiceServicer):
    """shop.order.v1.NotificationService."""
