"""v1 clients see byte-for-byte what they saw when v1 was recorded, with v2 in the build."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.contract import v1_products

pytestmark = pytest.mark.e2e

RECORDED: list[dict[str, Any]] = json.loads(v1_products.RECORDING.read_text())


def test_the_recording_covers_every_request() -> None:
    assert [r["request"]["path"] for r in RECORDED] == v1_products.REQUESTS


@pytest.mark.parametrize("recorded", RECORDED, ids=[r["request"]["path"] for r in RECORDED])
def test_a_recorded_v1_response_is_replayed_unchanged(
    http: httpx.Client, recorded: dict[str, Any]
) -> None:
    assert v1_products.observe(http, recorded["request"]["path"]) == recorded
