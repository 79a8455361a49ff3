"""The daily sales report on real PostgreSQL: figures, empty days, repeatability, no locks,
and the report service over a real gRPC channel (validation, admins only, one tenant)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2, status_pb2
from shop.order.v1 import reports_pb2, reports_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.idempotency import IdempotencyStore
from services.order import report_repository
from services.order.domain import Caller
from services.order.reporting import Reports
from services.order.sales import DailySales, DayRange, ProductSales
from services.order.schema import report_exports
from tests import reports_data
from tests.reports_data import MARCH_1, MARCH_3, OUTSIDE, PRODUCTS
from tests.servers import order_config, serving

MARCH = DayRange.parse("2026-03-01", "2026-03-03")


@pytest.fixture
async def seeded(engine: AsyncEngine, tenant: str) -> str:
    await reports_data.insert(engine, tenant, MARCH_1 + MARCH_3 + OUTSIDE)
    # Another shop's sale on the same day is never in this tenant's figures.
    other = [reports_data.Placed(reports_data.utc("2026-03-01T09:00:00"), "paid", 77777)]
    await reports_data.insert(engine, f"{tenant}-other", other)
    return tenant


def admin(tenant: str) -> Caller:
    return Caller(tenant, "admin-1", tenant_wide=True)


def sold(n: int, units: int, revenue: int, name: str = "") -> ProductSales:
    return ProductSales(str(PRODUCTS[n]), name or f"Product {n}", units, revenue)


async def test_revenue_is_paid_and_fulfilled_orders_only(engine: AsyncEngine, seeded: str) -> None:
    found = await Reports(engine, IdempotencyStore()).daily(admin(seeded), MARCH)
    march_1, march_2, march_3 = found.days
    assert march_1 == DailySales(
        day=MARCH.first,
        orders=7,
        revenue_cents=1000 + 2001 + 50,
        by_status={
            "cancelled": 1,
            "closed": 1,
            "draft": 1,
            "fulfilled": 1,
            "paid": 2,
            "pending": 1,
        },
        average_order_cents=(1000 + 2001 + 50) // 3,
        # The cancelled order's ten units of product 3 are not sales; the newest
        # order's name of a product wins.
        top_products=(sold(1, 3, 600 + 2001), sold(2, 1, 400), sold(4, 1, 50)),
    )
    assert march_2 == DailySales(MARCH.first.replace(day=2), 0, 0, {}, 0, ())
    assert march_3.by_status == {"paid": 1, "refunded": 1}
    assert (march_3.orders, march_3.revenue_cents, march_3.average_order_cents) == (2, 2100, 2100)
    # Six products sold that day: the five with most units, the refund not counted.
    assert march_3.top_products == (
        sold(6, 6, 600),
        sold(5, 5, 500),
        sold(4, 4, 400),
        sold(3, 3, 300),
        sold(2, 2, 200),
    )


async def test_the_total_is_the_whole_range_and_nothing_outside_it(
    engine: AsyncEngine, seeded: str
) -> None:
    total = (await Reports(engine, IdempotencyStore()).daily(admin(seeded), MARCH)).total
    assert total.day is None
    assert total.orders == 9
    assert total.revenue_cents == 3051 + 2100
    assert total.average_order_cents == (3051 + 2100) // 4
    assert total.by_status == {
        "cancelled": 1,
        "closed": 1,
        "draft": 1,
        "fulfilled": 1,
        "paid": 3,
        "pending": 1,
        "refunded": 1,
    }
    # Units first, then revenue: products 5 and 4 both sold 5 units.
    assert total.top_products == (
        sold(6, 6, 600),
        sold(5, 5, 500),
        sold(4, 5, 450),
        sold(1, 4, 2701),
        sold(2, 3, 600),
    )


async def test_a_day_with_no_orders_at_all_is_all_zeros(engine: AsyncEngine, tenant: str) -> None:
    found = await Reports(engine, IdempotencyStore()).daily(
        admin(tenant), DayRange.parse("2026-02-27", "2026-02-28")
    )
    assert [d.day.isoformat() for d in found.days if d.day] == ["2026-02-27", "2026-02-28"]
    assert all(d.orders == d.revenue_cents == d.average_order_cents == 0 for d in found.days)
    assert found.total == DailySales(None, 0, 0, {}, 0, ())


async def test_asking_twice_gives_identical_figures(engine: AsyncEngine, seeded: str) -> None:
    reports = Reports(engine, IdempotencyStore())
    assert await reports.daily(admin(seeded), MARCH) == await reports.daily(admin(seeded), MARCH)


async def test_the_report_reads_a_read_only_repeatable_read_snapshot(engine: AsyncEngine) -> None:
    async with report_repository.snapshot(engine, 1000) as conn:
        isolation = (await conn.execute(sa.text("SHOW transaction_isolation"))).scalar_one()
        read_only = (await conn.execute(sa.text("SHOW transaction_read_only"))).scalar_one()
        timeout = (await conn.execute(sa.text("SHOW statement_timeout"))).scalar_one()
    assert (isolation, read_only, timeout) == ("repeatable read", "on", "1s")


async def test_a_report_does_not_wait_for_orders_locked_by_another_transaction(
    postgres_url: str, seeded: str
) -> None:
    locker = db.create_engine(postgres_url, pool_size=1)
    reports_engine = db.create_engine(postgres_url, pool_size=1)
    try:
        async with locker.begin() as held:
            # Checkout's way of holding orders: row locks until its transaction ends.
            locked = await held.execute(
                sa.text("SELECT id FROM orders WHERE tenant_id = :t FOR UPDATE"), {"t": seeded}
            )
            assert len(locked.all()) == 11
            started = time.monotonic()
            found = await asyncio.wait_for(
                Reports(reports_engine, IdempotencyStore()).daily(admin(seeded), MARCH), 5
            )
            assert time.monotonic() - started < 2
            assert found.total.orders == 9
    finally:
        await locker.dispose()
        await reports_engine.dispose()


# --- over gRPC ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def channel(postgres_url: str) -> AsyncIterator[grpc.aio.Channel]:
    async with serving(order_config(postgres_url)) as (_app, ch):
        yield ch


def _md(tenant: str, role: str = "admin", **extra: str) -> tuple[tuple[str, str], ...]:
    return (
        ("x-user-id", "admin-1"),
        ("x-tenant-id", tenant),
        ("x-user-role", role),
        *((k.replace("_", "-"), v) for k, v in extra.items()),
    )


def _request(first: str, last: str) -> reports_pb2.GetDailyReportRequest:
    request = reports_pb2.GetDailyReportRequest(to=last)
    setattr(request, "from", first)
    return request


def _violation(error: grpc.aio.AioRpcError) -> str:
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad) for detail in status.details)
    return bad.field_violations[0].field


async def test_the_service_answers_the_admins_tenant_only(
    channel: grpc.aio.Channel, seeded: str
) -> None:
    stub = reports_pb2_grpc.ReportServiceStub(channel)
    mine = await stub.GetDailyReport(_request("2026-03-01", "2026-03-03"), metadata=_md(seeded))
    assert (getattr(mine, "from"), mine.to, len(mine.days)) == ("2026-03-01", "2026-03-03", 3)
    assert [d.day for d in mine.days] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert (mine.total.orders, mine.total.revenue_cents) == (9, 5151)
    assert dict(mine.days[0].by_status)["paid"] == 2
    assert mine.days[0].top_products[0].product_id == str(PRODUCTS[1])
    theirs = await stub.GetDailyReport(
        _request("2026-03-01", "2026-03-03"), metadata=_md(f"{seeded}-other")
    )
    assert (theirs.total.orders, theirs.total.revenue_cents) == (1, 77777)


async def test_a_customer_is_refused(channel: grpc.aio.Channel, tenant: str) -> None:
    stub = reports_pb2_grpc.ReportServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetDailyReport(
            _request("2026-03-01", "2026-03-03"), metadata=_md(tenant, "customer")
        )
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("first", "last", "field"),
    [
        ("", "2026-03-03", "from"),
        ("2026-3-01", "2026-03-03", "from"),
        ("2026-02-30", "2026-03-03", "from"),
        ("01/03/2026", "2026-03-03", "from"),
        ("2026-03-01", "2026-03-01T00:00:00", "to"),
        ("2026-03-01", "", "to"),
        ("2026-03-02", "2026-03-01", "to"),
        ("2024-01-01", "2025-01-01", "to"),  # 367 days
    ],
)
async def test_a_bad_range_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel, tenant: str, first: str, last: str, field: str
) -> None:
    stub = reports_pb2_grpc.ReportServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetDailyReport(_request(first, last), metadata=_md(tenant))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(raised.value) == field

    export = reports_pb2.CreateReportExportRequest(to=last)
    setattr(export, "from", first)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateReportExport(export, metadata=_md(tenant, idempotency_key="k-bad"))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(refused.value) == field


async def test_a_refused_export_creates_no_job(
    channel: grpc.aio.Channel, engine: AsyncEngine, tenant: str
) -> None:
    stub = reports_pb2_grpc.ReportServiceStub(channel)
    export = reports_pb2.CreateReportExportRequest(to="2026-03-01")
    setattr(export, "from", "2026-03-02")
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CreateReportExport(export, metadata=_md(tenant))
    async with engine.connect() as conn:
        jobs = await conn.execute(
            sa.select(sa.func.count()).where(report_exports.c.tenant_id == tenant)
        )
        assert jobs.scalar_one() == 0


async def test_a_full_leap_year_is_one_range(channel: grpc.aio.Channel, tenant: str) -> None:
    stub = reports_pb2_grpc.ReportServiceStub(channel)
    found = await stub.GetDailyReport(_request("2024-01-01", "2024-12-31"), metadata=_md(tenant))
    assert len(found.days) == 366
    assert (found.days[0].day, found.days[-1].day) == ("2024-01-01", "2024-12-31")
