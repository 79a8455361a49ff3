"""The kit's one copy of full-jitter backoff, base64url and UTC formatting, and who uses it."""

from __future__ import annotations

import base64
import binascii
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.event.domain import format_time
from services.kit.backoff import full_jitter
from services.kit.encoding import b64url, unb64url, utc_rfc3339
from services.kit.streams import RetryPolicy
from services.kit.upstream import Upstream, UpstreamPolicy
from tests.draws import Fixed

# --- full jitter -----------------------------------------------------------------------


@pytest.mark.parametrize(("retry", "ceiling"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0)])
def test_full_jitter_ceiling_doubles_per_retry_up_to_the_cap(retry: int, ceiling: float) -> None:
    assert full_jitter(Fixed(1.0), retry, base_s=0.5, cap_s=5.0) == pytest.approx(ceiling)
    assert full_jitter(Fixed(0.0), retry, base_s=0.5, cap_s=5.0) == 0.0


def test_full_jitter_survives_huge_retry_counts() -> None:
    assert full_jitter(Fixed(1.0), 10**6, base_s=1.0, cap_s=60.0) == 60.0
    assert full_jitter(Fixed(1.0), -3, base_s=1.0, cap_s=60.0) == 1.0


def test_upstream_and_queue_retries_wait_by_the_same_formula() -> None:
    upstream = Upstream(
        "x",
        "http://127.0.0.1:9",
        UpstreamPolicy(backoff_base_s=0.05, backoff_cap_s=1.0),
        rng=random.Random(3),
    )
    queue = RetryPolicy(base_s=0.05, cap_s=1.0)
    rng = random.Random(3)
    # Upstream counts retries from 0, the queue counts failed attempts from 1.
    assert [upstream.backoff(n) for n in range(8)] == [queue.delay(n + 1, rng) for n in range(8)]


# --- base64url -------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"\xfb\xff\xfe", bytes(range(256))])
def test_b64url_is_unpadded_urlsafe_and_round_trips(data: bytes) -> None:
    text = b64url(data)
    assert not set(text) & set("=+/")
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert unb64url(text) == data
    assert unb64url(base64.urlsafe_b64encode(data).decode()) == data  # padded is accepted too


def test_unb64url_refuses_what_is_not_base64() -> None:
    with pytest.raises(binascii.Error):
        unb64url("a")


# --- RFC 3339 in UTC -------------------------------------------------------------------


def test_utc_rfc3339_writes_z_and_converts_offsets() -> None:
    moment = datetime(2024, 5, 1, 14, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))
    assert utc_rfc3339(moment) == "2024-05-01T12:00:00.250000Z"
    assert utc_rfc3339(moment, timespec="milliseconds") == "2024-05-01T12:00:00.250Z"
    assert utc_rfc3339(datetime(2024, 5, 1, 12, tzinfo=UTC)) == "2024-05-01T12:00:00Z"


def test_event_times_keep_their_millisecond_form() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 0, 123_999, tzinfo=UTC)
    assert format_time(moment) == "2024-05-01T12:00:00.123Z"
