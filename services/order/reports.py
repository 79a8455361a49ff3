"""Sales reports and their CSV exports (shop.order.v1.ReportService)."""

from __future__ import annotations

from shop.order.v1 import reports_pb2_grpc


class ReportServicer(reports_pb2_grpc.ReportServiceServicer):
    """shop.order.v1.ReportService."""
