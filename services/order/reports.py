"""Sales reports and their CSV exports (shop.order.v1.ReportService): protos in, use
case call, protos out. `from` and `to` are Python keywords, hence `getattr`."""

from __future__ import annotations

from google.api import httpbody_pb2
from shop.order.v1 import reports_pb2, reports_pb2_grpc

from services.kit import calls
from services.kit.idempotency import fingerprint
from services.kit.ids import parse_uuid
from services.kit.wire import timestamp
from services.order.reporting import Reports
from services.order.sales import DailySales, DayRange, ExportJob
from services.order.servicer import caller

Context = calls.Context
CSV_TYPE = "text/csv; charset=utf-8"


def _range(
    request: reports_pb2.GetDailyReportRequest | reports_pb2.CreateReportExportRequest,
) -> DayRange:
    return DayRange.parse(getattr(request, "from"), request.to)


def sales_proto(sales: DailySales) -> reports_pb2.DailySales:
    return reports_pb2.DailySales(
        day="" if sales.day is None else sales.day.isoformat(),
        orders=sales.orders,
        revenue_cents=sales.revenue_cents,
        by_status=dict(sales.by_status),
        average_order_cents=sales.average_order_cents,
        top_products=[
            reports_pb2.ProductSales(
                product_id=p.product_id, name=p.name, units=p.units, revenue_cents=p.revenue_cents
            )
            for p in sales.top_products
        ],
    )


def export_proto(job: ExportJob) -> reports_pb2.ReportExport:
    msg = reports_pb2.ReportExport(
        id=str(job.id),
        to=job.range.last.isoformat(),
        status=job.status,
        rows_done=job.rows_done,
        created_at=timestamp(job.created_at),
    )
    setattr(msg, "from", job.range.first.isoformat())
    if job.rows_total is not None:
        msg.rows_total = job.rows_total
    if job.finished_at is not None:
        msg.finished_at.CopyFrom(timestamp(job.finished_at))
    if job.error is not None:
        msg.error = job.error
    if job.csv is not None:
        msg.csv = job.csv
    return msg


class ReportServicer(reports_pb2_grpc.ReportServiceServicer):
    """shop.order.v1.ReportService over the Reports use cases."""

    def __init__(self, reports: Reports) -> None:
        self._reports = reports

    async def GetDailyReport(
        self, request: reports_pb2.GetDailyReportRequest, context: Context
    ) -> reports_pb2.DailyReport:
        who, span = caller(context), _range(request)
        found = await self._reports.daily(who, span)
        reply = reports_pb2.DailyReport(
            to=span.last.isoformat(),
            days=[sales_proto(day) for day in found.days],
            total=sales_proto(found.total),
        )
        setattr(reply, "from", span.first.isoformat())
        return reply

    async def CreateReportExport(
        self, request: reports_pb2.CreateReportExportRequest, context: Context
    ) -> reports_pb2.ReportExport:
        who, span = caller(context), _range(request)
        key = (calls.header(context, "idempotency-key") or "").strip() or None
        body_hash = fingerprint("CreateReportExport", request.SerializeToString(deterministic=True))
        requested = await self._reports.request_export(who, span, key, body_hash)
        await calls.send_headers(context, http_status=202, replayed=requested.replayed)
        return export_proto(requested.job)

    async def GetReportExport(
        self, request: reports_pb2.GetReportExportRequest, context: Context
    ) -> reports_pb2.ReportExport:
        job = await self._reports.export(caller(context), parse_uuid(request.id))
        return export_proto(job)

    async def DownloadReportExport(
        self, request: reports_pb2.DownloadReportExportRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        text = await self._reports.csv(caller(context), parse_uuid(request.id))
        return httpbody_pb2.HttpBody(content_type=CSV_TYPE, data=text.encode())
