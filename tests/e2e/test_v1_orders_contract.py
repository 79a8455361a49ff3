"""Seed-001 draft orders (no product lines) answer byte for byte what they answered when
recorded, with placed orders in the build: tests/contract/v1_orders.json, recorded from the
build before placed orders existed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.contract import v1_orders

pytestmark = pytest.mark.e2e

RECORDED: list[dict[str, Any]] = json.loads(v1_orders.RECORDING.read_text())


def test_the_recording_is_of_todays_script() -> None:
    assert [(r["step"], r["request"]) for r in RECORDED] == [
        (
            s.name,
            {"method": s.method, "path": s.path, "headers": s.headers, "body": s.body},
        )
        for s in v1_orders.SCRIPT
    ]


@pytest.fixture(scope="module")
def observed(http: httpx.Client) -> dict[str, dict[str, Any]]:
    """The whole script, run once against the platform under test, by step."""
    return {o["step"]: o for o in v1_orders.run(http)}


@pytest.mark.parametrize("recorded", RECORDED, ids=[r["step"] for r in RECORDED])
def test_a_recorded_draft_order_response_is_replayed_unchanged(
    observed: dict[str, dict[str, Any]], recorded: dict[str, Any]
) -> None:
    assert observed[recorded["step"]] == recorded
