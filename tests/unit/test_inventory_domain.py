"""The inventory's pure rules: merging lines, hold times, versions, crossing the threshold."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from services.inventory.domain import (
    DEFAULT_TTL_S,
    StockLevel,
    check_version,
    crossed_low,
    merged_lines,
    ttl_seconds,
)
from services.kit import errors

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


def test_lines_merge_per_product_and_sort_by_product_id() -> None:
    lines = merged_lines([(B, 1), (A, 2), (B, 3)])
    assert [(str(line.product_id), line.quantity) for line in lines] == [(A, 2), (B, 4)]


@pytest.mark.parametrize(
    ("raw", "field"),
    [([], "lines"), ([(A, 0)], "lines[0].quantity"), ([(A, 1), ("A", 1)], "lines[1].productId")],
)
def test_bad_lines_name_the_field(raw: list[tuple[str, int]], field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        merged_lines(raw)
    assert raised.value.violations[0].field == field


def test_hold_times() -> None:
    assert ttl_seconds(0) == DEFAULT_TTL_S
    assert ttl_seconds(86_400) == 86_400
    for bad in (-1, 86_401):
        with pytest.raises(errors.InvalidArgument):
            ttl_seconds(bad)


def test_a_missing_row_is_version_zero() -> None:
    check_version(None, 0)
    with pytest.raises(errors.StaleVersion) as raised:
        check_version(None, 1)
    assert raised.value.metadata == {"currentVersion": "0"}


def test_only_a_downward_crossing_counts() -> None:
    above = StockLevel("t", uuid.UUID(A), 6, 0, 5, 1, None)
    at = replace(above, available=5)
    below = replace(above, available=4)
    assert crossed_low(above, at)
    assert not crossed_low(at, below)
    assert not crossed_low(above, replace(above, available=6))
    assert crossed_low(None, below)
    assert not crossed_low(None, above)
