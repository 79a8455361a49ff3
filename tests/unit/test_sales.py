"""Report values without a database: day ranges, the figures of a day, CSV quoting."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime

import pytest

from services.kit import errors
from services.order.sales import (
    CSV_HEADER,
    DayRange,
    ExportRow,
    Position,
    StatusCount,
    csv_chunk,
    csv_document,
    sales,
)


def test_a_range_covers_whole_utc_days_both_ends_included() -> None:
    span = DayRange.parse("2026-03-01", "2026-03-03")
    assert span.start == datetime(2026, 3, 1, tzinfo=UTC)
    assert span.end == datetime(2026, 3, 4, tzinfo=UTC)
    assert span.days() == [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    assert len(DayRange.parse("2024-01-01", "2024-12-31").days()) == 366


@pytest.mark.parametrize(
    ("first", "last", "field"),
    [
        ("", "2026-03-01", "from"),
        ("2026-03-1", "2026-03-01", "from"),
        ("٢٠٢٦-03-01", "2026-03-01", "from"),  # other scripts' digits
        ("2026-02-29", "2026-03-01", "from"),
        ("2026-03-01", "2026-13-01", "to"),
        ("2026-03-02", "2026-03-01", "to"),
        ("2025-01-01", "2026-01-02", "to"),  # 367 days
    ],
)
def test_a_bad_range_names_its_field(first: str, last: str, field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        DayRange.parse(first, last)
    assert raised.value.violations[0].field == field


def test_revenue_and_the_average_come_from_paid_and_fulfilled_only() -> None:
    day = date(2026, 3, 1)
    figures = sales(
        day,
        [
            StatusCount(day, "paid", 2, 301),
            StatusCount(day, "fulfilled", 1, 100),
            StatusCount(day, "refunded", 4, 1000),
            StatusCount(day, "draft", 1, 0),
        ],
        [],
    )
    assert (figures.orders, figures.revenue_cents, figures.average_order_cents) == (8, 401, 133)
    assert figures.by_status == {"draft": 1, "fulfilled": 1, "paid": 2, "refunded": 4}
    assert sales(day, [StatusCount(day, "cancelled", 3, 900)], []).average_order_cents == 0


def test_csv_quotes_what_needs_quoting_and_the_header_comes_first() -> None:
    row = ExportRow(
        uuid.UUID(int=1), datetime(2026, 3, 1, 1, 2, 3, tzinfo=UTC), "paid", 'a,"b"\nc', None, 2, 5
    )
    text = csv_document([csv_chunk([row])])
    parsed = list(csv.reader(io.StringIO(text)))
    assert tuple(parsed[0]) == CSV_HEADER
    assert parsed[1] == [
        str(row.order_id),
        "2026-03-01T01:02:03Z",
        "paid",
        'a,"b"\nc',
        "",
        "2",
        "5",
    ]


def test_a_position_survives_its_text_form() -> None:
    position = Position(datetime(2026, 3, 1, 0, 0, 0, 123456, tzinfo=UTC), uuid.uuid4())
    assert Position.decode(position.encode()) == position
