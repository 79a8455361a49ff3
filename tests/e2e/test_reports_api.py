"""Sales reports and CSV exports through Envoy: admins of the tenant only, the day range
bound from the query string, and an export that the relay and the export worker finish."""

from __future__ import annotations

import csv
import io
import time
import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.launcher.platform import State
from tests import identity, reports_data
from tests.e2e.conftest import Api, assert_error
from tests.reports_data import MARCH_1, MARCH_3, OUTSIDE

pytestmark = pytest.mark.e2e

DAILY = "/v1/admin/reports/daily"
EXPORTS = "/v1/admin/reports/exports"


@pytest.fixture
def boss(http: httpx.Client, platform: State, tenant: str) -> Api:
    return Api(http, identity.admin(http, platform, tenant))


async def test_an_admin_gets_the_daily_report_of_the_range_in_the_query(
    boss: Api, engine: AsyncEngine
) -> None:
    await reports_data.insert(engine, boss.tenant, MARCH_1 + MARCH_3 + OUTSIDE)
    response = boss.http.get(
        DAILY, params={"from": "2026-03-01", "to": "2026-03-03"}, headers=boss.headers()
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"]) == ("2026-03-01", "2026-03-03")
    assert [d["day"] for d in body["days"]] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    march_1 = body["days"][0]
    assert (march_1["orders"], march_1["revenueCents"], march_1["averageOrderCents"]) == (
        "7",
        "3051",
        "1017",
    )
    assert march_1["byStatus"]["paid"] == "2"
    assert len(body["days"][2]["topProducts"]) == 5
    assert (body["total"]["orders"], body["total"]["revenueCents"]) == ("9", "5151")
    # The empty day is there, all zeros.
    assert body["days"][1] == {
        "day": "2026-03-02",
        "orders": "0",
        "revenueCents": "0",
        "byStatus": {},
        "averageOrderCents": "0",
        "topProducts": [],
    }


def test_a_customer_is_refused_the_report(api: Api) -> None:
    response = api.http.get(
        DAILY, params={"from": "2026-03-01", "to": "2026-03-03"}, headers=api.headers()
    )
    assert_error(response, 403, "permission_denied")
    export = api.http.post(
        EXPORTS, json={"from": "2026-03-01", "to": "2026-03-03"}, headers=api.headers()
    )
    assert_error(export, 403, "permission_denied")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-3-01", "to": "2026-03-03"}, "from"),
        ({"to": "2026-03-03"}, "from"),
        ({"from": "2026-03-04", "to": "2026-03-03"}, "to"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, "to"),
    ],
)
def test_a_bad_day_is_a_400_naming_the_field(boss: Api, params: dict[str, str], field: str) -> None:
    body = assert_error(
        boss.http.get(DAILY, params=params, headers=boss.headers()), 400, "invalid_argument"
    )
    assert body["message"].startswith(f"{field}:"), body


def test_an_export_is_accepted_finished_by_the_worker_and_downloaded_as_csv(
    boss: Api, http: httpx.Client, platform: State
) -> None:
    key = uuid.uuid4().hex
    asked = boss.http.post(
        EXPORTS,
        json={"from": "2026-03-01", "to": "2026-03-03"},
        headers=boss.headers(Idempotency_Key=key),
    )
    assert asked.status_code == 202, asked.text
    job = asked.json()
    assert (job["status"], job["from"], job["to"]) == ("queued", "2026-03-01", "2026-03-03")
    again = boss.http.post(
        EXPORTS,
        json={"from": "2026-03-01", "to": "2026-03-03"},
        headers=boss.headers(Idempotency_Key=key),
    )
    assert (again.status_code, again.json()["id"]) == (202, job["id"])

    deadline = time.monotonic() + 30
    while True:
        polled = boss.http.get(f"{EXPORTS}/{job['id']}", headers=boss.headers())
        assert polled.status_code == 200, polled.text
        if polled.json()["status"] == "done" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    done = polled.json()
    assert done["status"] == "done", done
    assert "finishedAt" in done

    download = boss.http.get(f"{EXPORTS}/{job['id']}/csv", headers=boss.headers())
    assert download.status_code == 200, download.text
    assert download.headers["content-type"].startswith("text/csv")
    assert download.text == done["csv"]
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0][:3] == ["order_id", "created_at", "status"]

    # Another tenant's admin does not see the job.
    stranger = identity.admin(http, platform, f"{boss.tenant}-other")
    other = boss.http.get(f"{EXPORTS}/{job['id']}", headers=stranger.headers())
    assert_error(other, 404, "not_found")
