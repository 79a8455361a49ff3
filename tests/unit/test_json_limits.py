"""The platform's JSON limits as the services apply them, and the event fields that become keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.event.domain import event_of, parse_event
from services.kit import errors, jsonlimits
from services.kit.streams import is_dead_id

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def nested(levels: int) -> str:
    """A JSON document of exactly `levels` levels of objects and arrays."""
    return '{"a":' * (levels - 1) + "[]" + "}" * (levels - 1)


def test_documents_up_to_the_depth_limit_parse() -> None:
    assert jsonlimits.loads(nested(jsonlimits.MAX_DEPTH))
    jsonlimits.check(json.loads(nested(jsonlimits.MAX_DEPTH)), "data")


@pytest.mark.parametrize("levels", [jsonlimits.MAX_DEPTH + 1, 98, 1_000, 100_000])
def test_deeper_documents_are_invalid_arguments(levels: int) -> None:
    # 1,000 levels used to escape as a RecursionError.
    with pytest.raises(errors.InvalidArgument, match="nested more than 32 levels"):
        jsonlimits.loads(nested(levels))


def test_a_repeated_key_is_refused_wherever_it_is() -> None:
    for body in ('{"a": 1, "a": 2}', '{"x": [{"a": 1, "\\u0061": 2}]}'):
        with pytest.raises(errors.InvalidArgument, match="repeats the key 'a'"):
            jsonlimits.loads(body)
    assert jsonlimits.loads('{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}')


def test_a_null_array_element_is_refused_naming_it() -> None:
    with pytest.raises(errors.InvalidArgument) as refused:
        jsonlimits.loads('{"items": [1, null]}')
    assert refused.value.violations[0].field == "items[1]"
    assert jsonlimits.loads('{"items": [], "note": null}') == {"items": [], "note": None}


def test_constants_outside_json_are_refused() -> None:
    with pytest.raises(errors.InvalidArgument, match="not valid JSON"):
        jsonlimits.loads('{"a": NaN}')


def test_a_too_deep_webhook_body_is_an_invalid_argument() -> None:
    body = ('{"type": "a.b", "data": {"shipmentId": "S", "status": "x", "deep": '
            + nested(1_000) + "}}").encode()  # fmt: skip
    with pytest.raises(errors.InvalidArgument, match="nested"):
        parse_event("courier", "e1", body, signed_at=NOW, received_at=NOW, latest=NOW)


def document(**data: object) -> dict[str, object]:
    return {"type": "shipment.status_changed", "data": {"shipmentId": "S-1", "status": "x", **data}}


@pytest.mark.parametrize(
    ("event_id", "source", "shipment", "field"),
    [("evt\r\nx-injected: 1", "internal", "S-1", "id"), ("evt\x00", "internal", "S-1", "id"),
     ("évt", "internal", "S-1", "id"), ("x" * 256, "internal", "S-1", "id"), ("", "internal", "S-1", "id"),
     ("e1", "Bad Source", "S-1", "source"), ("e1", "internal", "S\n1", "data.shipmentId"),
     ("e1", "internal", "SHP-é", "data.shipmentId"), ("e1", "internal", "S/1", "data.shipmentId")],
)  # fmt: skip
def test_ids_that_become_headers_and_keys_are_printable_ascii_tokens(
    event_id: str, source: str, shipment: str, field: str
) -> None:
    body = {"type": "shipment.status_changed", "data": {"shipmentId": shipment, "status": "x"}}
    with pytest.raises(errors.InvalidArgument) as refused:
        event_of(source, event_id, body, default_time=NOW, received_at=NOW, latest=NOW)
    assert refused.value.violations[0].field == field


def test_event_times_beyond_the_skew_are_refused() -> None:
    latest = NOW + timedelta(minutes=5)
    for stamp in ("9999-12-31T23:59:59Z", "2026-11-20T10:05:01Z", "9999-12-31T23:00:00-01:00"):
        with pytest.raises(errors.InvalidArgument) as refused:
            event_of("c", "e1", document() | {"timestamp": stamp},
                     default_time=NOW, received_at=NOW, latest=latest)  # fmt: skip
        assert refused.value.violations[0].field == "timestamp"
    ok = event_of("c", "e1", document() | {"timestamp": "2026-11-20T10:04:59Z"},
                  default_time=NOW, received_at=NOW, latest=latest)  # fmt: skip
    assert ok.occurred_at == NOW + timedelta(minutes=4, seconds=59)


@pytest.mark.parametrize(
    ("value", "valid"),
    [("1700000000000-0", True), ("18446744073709551615-18446744073709551615", True),
     ("18446744073709551616-0", False), ("0-18446744073709551616", False),
     ("99999999999999999999-0", False), ("\u0661\u0667-0", False), ("1-", False), ("abc", False)],
)  # fmt: skip
def test_dead_ids_are_redis_stream_ids(value: str, valid: bool) -> None:
    assert is_dead_id(value) is valid
