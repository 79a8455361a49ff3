"""Cursors are opaque, verified and bound to the list (tenant) that issued them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.kit import errors
from services.kit.cursor import CursorCodec, TimeIdPosition

codec = CursorCodec(b"k" * 32)
position = TimeIdPosition(datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), uuid.uuid4())


def test_round_trip_keeps_microseconds_and_id() -> None:
    assert codec.decode_time_id("orders:a", codec.encode_time_id("orders:a", position)) == position


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),
        lambda c: "x" + c,
        lambda c: c.split(".")[0],
        lambda c: "",
        lambda c: "....",
        lambda c: "eyJ0cyI6IjIwMjYifQ.AAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_a_changed_cursor_is_invalid_argument(mangle: object) -> None:
    cursor = codec.encode_time_id("orders:a", position)
    with pytest.raises(errors.InvalidArgument):
        codec.decode_time_id("orders:a", mangle(cursor))  # type: ignore[operator]


def test_a_cursor_of_another_scope_or_secret_is_refused() -> None:
    cursor = codec.encode_time_id("orders:a", position)
    with pytest.raises(errors.InvalidArgument):
        codec.decode_time_id("orders:b", cursor)
    with pytest.raises(errors.InvalidArgument):
        CursorCodec(b"z" * 32).decode_time_id("orders:a", cursor)
