"""The queue kit without Redis: full-jitter backoff, worker config, the stored message form."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from services.kit.config import ConfigError
from services.kit.streams import Message, RetryPolicy, WorkerConfig
from services.kit.streams.message import (
    MalformedMessage,
    decode,
    decode_lenient,
    describe_error,
    encode,
)
from services.kit.streams.outcomes import delayed_member
from tests.draws import Fixed

# --- backoff ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (40, 5.0)]
)
def test_backoff_ceiling_doubles_per_attempt_up_to_the_cap(attempt: int, ceiling: float) -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=5.0)
    assert policy.delay(attempt, Fixed(1.0)) == pytest.approx(ceiling)
    assert policy.delay(attempt, Fixed(0.0)) == 0.0


def test_backoff_is_full_jitter_over_the_whole_range() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=60.0)
    rng = random.Random(7)
    delays = [policy.delay(3, rng) for _ in range(2000)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    # Full jitter, not "half fixed, half random": the whole [0, 4] range is used, evenly.
    assert min(delays) < 0.1
    assert max(delays) > 3.9
    assert sum(delays) / len(delays) == pytest.approx(2.0, abs=0.15)


def test_backoff_never_exceeds_the_cap_even_for_absurd_attempts() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=60.0)
    rng = random.Random(1)
    assert all(0.0 <= policy.delay(attempt, rng) <= 60.0 for attempt in (10, 100, 10_000))


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_s": -1.0}, {"cap_s": -0.5}], ids=str
)
def test_retry_policy_rejects_impossible_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# --- worker config ---------------------------------------------------------------------


def test_handler_timeout_must_be_shorter_than_the_visibility_timeout() -> None:
    WorkerConfig("c", visibility_timeout_s=30.0, handler_timeout_s=29.9)
    with pytest.raises(ConfigError, match="handler_timeout_s"):
        WorkerConfig("c", visibility_timeout_s=30.0, handler_timeout_s=30.0)
    with pytest.raises(ConfigError, match="handler_timeout_s"):
        WorkerConfig("c", visibility_timeout_s=5.0, handler_timeout_s=20.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"consumer": ""},
        {"concurrency": 0},
        {"handler_timeout_s": 0.0},
        {"block_ms": 0},
        {"scheduler_interval_s": 0.0},
    ],
    ids=str,
)
def test_worker_config_rejects_unworkable_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        WorkerConfig(**{"consumer": "c", **kwargs})  # type: ignore[arg-type]


def test_worker_config_from_env_reads_the_prefixed_settings() -> None:
    env = {
        "EV_CONCURRENCY": "8",
        "EV_VISIBILITY_TIMEOUT_S": "12.5",
        "EV_HANDLER_TIMEOUT_S": "10",
        "EV_MAX_ATTEMPTS": "7",
        "EV_RETRY_BASE_S": "0.25",
        "EV_RETRY_CAP_S": "30",
        "OTHER_CONCURRENCY": "99",
    }
    config = WorkerConfig.from_env("EV", env, "host-1")
    assert config == WorkerConfig(
        consumer="host-1",
        concurrency=8,
        visibility_timeout_s=12.5,
        handler_timeout_s=10.0,
        retry=RetryPolicy(max_attempts=7, base_s=0.25, cap_s=30.0),
    )
    assert WorkerConfig.from_env("EV", {}, "host-1") == WorkerConfig(consumer="host-1")


@pytest.mark.parametrize(
    "env",
    [
        {"EV_CONCURRENCY": "many"},
        {"EV_HANDLER_TIMEOUT_S": "40"},  # longer than the default 30 s visibility timeout
    ],
    ids=str,
)
def test_worker_config_from_env_rejects_bad_values(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        WorkerConfig.from_env("EV", env, "host-1")


# --- the stored form -------------------------------------------------------------------

MESSAGE = Message(
    id="evt-ü-1",
    tenant="acme",
    type="shipment.delivered",
    payload=bytes(range(256)),
    attempt=3,
    last_error="RuntimeError: über",
    traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    enqueued_at_ms=1_700_000_000_123,
)


def _stored(message: Message) -> dict[bytes, bytes]:
    """The fields as Redis hands them back: bytes names and values."""
    return {name.encode(): value for name, value in encode(message).items()}


def test_message_round_trips_through_its_stream_fields() -> None:
    decoded = decode("1700000000123-0", _stored(MESSAGE))
    assert decoded == dataclasses.replace(MESSAGE, entry_id="1700000000123-0")


def test_entry_id_is_not_stored() -> None:
    assert b"entry_id" not in _stored(Message("a", "t", "x", b"", entry_id="1-0"))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({b"payload": None}, "missing field"),
        ({b"id": None, b"tenant": None}, "missing field"),
        ({b"id": b""}, "must not be empty"),
        ({b"attempt": b"two"}, "unreadable"),
        ({b"attempt": b"-1"}, "negative"),
        ({b"tenant": b"\xff\xfe"}, "unreadable"),
    ],
    ids=str,
)
def test_a_malformed_entry_is_refused(change: dict[bytes, bytes | None], problem: str) -> None:
    fields = _stored(MESSAGE)
    for name, value in change.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    with pytest.raises(MalformedMessage, match=problem):
        decode("1-0", fields)


def test_a_deleted_entry_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode("1-0", None)


def test_lenient_decoding_shows_what_a_malformed_entry_has() -> None:
    shown = decode_lenient("1-0", {b"tenant": b"acme", b"attempt": b"x", b"payload": b"\x00"})
    assert (shown.id, shown.tenant, shown.attempt, shown.payload) == ("", "acme", 0, b"\x00")


def test_error_descriptions_are_short_and_name_the_exception() -> None:
    assert describe_error(ValueError("bad input")) == "ValueError: bad input"
    assert describe_error(TimeoutError()) == "TimeoutError"
    assert len(describe_error(RuntimeError("x" * 10_000))) <= 500


def test_delayed_retries_of_one_message_never_collide() -> None:
    first = delayed_member(Message("same-id", "t", "x", b"p", attempt=1, entry_id="1-0"))
    second = delayed_member(Message("same-id", "t", "x", b"p", attempt=1, entry_id="2-0"))
    assert first != second
    # The scheduler script reads the payload back from hex.
    assert json.loads(first)["payload"] == b"p".hex()
