"""Sales reports and export jobs as plain values: day ranges, daily figures, CSV rows.

A report covers whole UTC days, both ends included, at most `MAX_DAYS` of
them. Revenue is what paid and fulfilled orders bring in (`REVENUE_STATUSES`);
every other status, drafts included, is counted under its name and never
as revenue.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from services.kit import errors

MAX_DAYS = 366
TOP_PRODUCTS = 5
REVENUE_STATUSES = ("paid", "fulfilled")
CSV_HEADER = ("order_id", "created_at", "status", "user_id", "total_cents", "items", "units")

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_day(raw: str, field_name: str) -> date:
    """A `YYYY-MM-DD` calendar day; InvalidArgument naming the field otherwise."""
    if not raw:
        raise errors.InvalidArgument.field(field_name, "is required (YYYY-MM-DD)")
    if not _DAY.fullmatch(raw):
        raise errors.InvalidArgument.field(field_name, "must be a day as YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise errors.InvalidArgument.field(field_name, "is not a calendar day") from None


@dataclass(frozen=True)
class DayRange:
    """UTC days `first`..`last`, both included."""

    first: date
    last: date

    @classmethod
    def parse(cls, first: str, last: str) -> DayRange:
        """The range a request names; InvalidArgument naming `from` or `to` when it is
        not one (a bad day, `to` before `from`, more than MAX_DAYS days)."""
        start, end = parse_day(first, "from"), parse_day(last, "to")
        if end < start:
            raise errors.InvalidArgument.field("to", "must not be before from")
        if (end - start).days + 1 > MAX_DAYS:
            raise errors.InvalidArgument.field("to", f"the range is at most {MAX_DAYS} days")
        return cls(start, end)

    @property
    def start(self) -> datetime:
        """The first instant of the range (UTC midnight of `first`)."""
        return datetime.combine(self.first, time(), UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the range (UTC midnight after `last`)."""
        return datetime.combine(self.last + timedelta(days=1), time(), UTC)

    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


@dataclass(frozen=True)
class ProductSales:
    product_id: str
    name: str
    units: int
    revenue_cents: int


@dataclass(frozen=True)
class DailySales:
    """One day's figures, or the whole range's when `day` is None."""

    day: date | None
    orders: int
    revenue_cents: int
    by_status: Mapping[str, int]
    average_order_cents: int
    top_products: tuple[ProductSales, ...] = ()


@dataclass(frozen=True)
class StatusCount:
    """Orders of one day in one status, and what they total."""

    day: date
    status: str
    orders: int
    total_cents: int


def sales(
    day: date | None, counts: Iterable[StatusCount], top: Sequence[ProductSales]
) -> DailySales:
    """A day's (or the range's) figures from its per-status counts and best sellers."""
    by_status: dict[str, int] = {}
    revenue = revenue_orders = 0
    for count in counts:
        by_status[count.status] = by_status.get(count.status, 0) + count.orders
        if count.status in REVENUE_STATUSES:
            revenue += count.total_cents
            revenue_orders += count.orders
    return DailySales(
        day=day,
        orders=sum(by_status.values()),
        revenue_cents=revenue,
        by_status=dict(sorted(by_status.items())),
        average_order_cents=revenue // revenue_orders if revenue_orders else 0,
        top_products=tuple(top[:TOP_PRODUCTS]),
    )


@dataclass(frozen=True)
class DailyReport:
    range: DayRange
    days: tuple[DailySales, ...]
    total: DailySales


def report(
    span: DayRange,
    counts: Sequence[StatusCount],
    top_by_day: Mapping[date, Sequence[ProductSales]],
    top_overall: Sequence[ProductSales],
) -> DailyReport:
    """Every day of the range, days without orders as zeros, and the range's total."""
    per_day: dict[date, list[StatusCount]] = {}
    for count in counts:
        per_day.setdefault(count.day, []).append(count)
    days = tuple(sales(d, per_day.get(d, ()), top_by_day.get(d, ())) for d in span.days())
    return DailyReport(span, days, sales(None, counts, top_overall))


@dataclass(frozen=True)
class Position:
    """Where an export stands: the last order written, in (created_at, id) order."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        return f"{self.created_at.isoformat()} {self.id}"

    @classmethod
    def decode(cls, text: str) -> Position:
        stamp, _, order_id = text.partition(" ")
        return cls(datetime.fromisoformat(stamp), uuid.UUID(order_id))


@dataclass(frozen=True)
class ExportJob:
    """A background CSV export of the orders of a range."""

    id: uuid.UUID
    tenant_id: str
    requested_by: str
    range: DayRange
    status: str
    rows_done: int
    rows_total: int | None
    position: Position | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    csv: str | None = field(default=None)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


@dataclass(frozen=True)
class ExportRow:
    """One order as an export writes it."""

    order_id: uuid.UUID
    created_at: datetime
    status: str
    user_id: str | None
    total_cents: int | None
    items: int  # order lines
    units: int  # units over all lines

    @property
    def position(self) -> Position:
        return Position(self.created_at, self.order_id)


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    """Rows as CSV (RFC 4180 quoting, CRLF line ends); None is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    return out.getvalue()


def csv_chunk(rows: Iterable[ExportRow]) -> str:
    """Orders as CSV lines (no header)."""
    return csv_text(
        (
            str(r.order_id),
            r.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            r.status,
            r.user_id,
            r.total_cents,
            r.items,
            r.units,
        )
        for r in rows
    )


def csv_document(chunks: Iterable[str]) -> str:
    """The whole export: the header line, then the chunks in order."""
    return csv_text([CSV_HEADER]) + "".join(chunks)
