"""The Orders API of seed 001, end to end: REST through Envoy to the service and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.housekeeping import Housekeeping
from services.launcher.platform import State
from tests.e2e.conftest import Api, assert_error

pytestmark = pytest.mark.e2e


def _utc(ts: str) -> datetime:
    assert ts.endswith("Z"), ts
    return datetime.fromisoformat(ts)


# --- 1. Idempotency ------------------------------------------------------------------------


def test_create_returns_a_draft_with_the_seed_shape(api: Api) -> None:
    response = api.create("key-1")
    assert response.status_code == 201
    order = response.json()
    assert {"id", "tenantId", "status", "version", "createdAt"} <= order.keys()
    uuid.UUID(order["id"])
    assert order["tenantId"] == api.tenant
    assert order["status"] == "draft"
    assert order["version"] == 1
    assert "totalCents" not in order
    _utc(order["createdAt"])
    assert response.headers["etag"] == '"1"'


def test_same_key_same_body_replays_the_identical_response(api: Api) -> None:
    body = {
        "customerRef": "cust-7",
        "items": [{"sku": "SKU-1", "quantity": 2, "unitPriceCents": 450}],
    }
    first = api.create("same", body)
    again = api.create("same", body)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(api.list().json()["items"]) == 1


def test_same_key_different_body_is_a_conflict(api: Api) -> None:
    assert api.create("reused", {"customerRef": "a"}).status_code == 201
    body = assert_error(api.create("reused", {"customerRef": "b"}), 409, "conflict")
    assert "different request" in body["message"]
    assert len(api.list().json()["items"]) == 1


def test_keys_are_scoped_per_tenant(http: httpx.Client, api: Api) -> None:
    other = Api.of_new_customer(http, f"{api.tenant}-other")
    mine = api.create("shared-key").json()
    theirs = other.create("shared-key", {"customerRef": "different"})
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine["id"]


def test_create_requires_the_idempotency_key(api: Api) -> None:
    response = api.http.post("/v1/orders", json={}, headers=api.headers())
    body = assert_error(response, 400, "invalid_argument")
    assert "Idempotency-Key" in body["message"]
    assert api.list().json()["items"] == []


def test_create_requires_an_access_token(http: httpx.Client, tenant: str) -> None:
    response = http.post(
        "/v1/orders", json={}, headers={"Idempotency-Key": "k", "X-Tenant-Id": tenant}
    )
    assert assert_error(response, 401, "unauthenticated")["message"] == "Jwt is missing"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"sku": "", "quantity": 1, "unitPriceCents": 1}]}, "items[0].sku"),
        ({"items": [{"sku": "A", "quantity": 0, "unitPriceCents": 1}]}, "items[0].quantity"),
        ({"items": [{"sku": "A", "quantity": 1, "unitPriceCents": -5}]}, "items[0].unitPriceCents"),
        ({"customerRef": "x" * 129}, "customerRef"),
    ],
)
def test_invalid_items_are_refused_and_create_nothing(
    api: Api, body: dict[str, object], field: str
) -> None:
    error = assert_error(api.create("bad", body), 400, "invalid_argument")
    violations = [d for d in error["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert violations[0]["fieldViolations"][0]["field"] == field
    assert api.list().json()["items"] == []
    # The refused request did not burn the key.
    assert api.create("bad", {}).status_code == 201


async def test_twenty_concurrent_creates_with_one_key_make_one_order(
    platform: State, api: Api
) -> None:
    async with httpx.AsyncClient(base_url=platform.rest_url, timeout=20) as client:
        responses = await asyncio.gather(
            *[
                client.post(
                    "/v1/orders",
                    json={"customerRef": "burst"},
                    headers=api.headers(Idempotency_Key="burst-key"),
                )
                for _ in range(20)
            ]
        )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(api.list(limit=100).json()["items"]) == 1


async def test_an_expired_key_creates_a_new_order(api: Api, engine: AsyncEngine) -> None:
    first = api.create("old-key").json()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
                "WHERE tenant_id = :t AND key = 'old-key'"
            ),
            {"t": api.tenant},
        )
    again = api.create("old-key")
    assert again.status_code == 201
    assert again.json()["id"] != first["id"]


async def test_expired_keys_are_purged_and_live_ones_kept(api: Api, engine: AsyncEngine) -> None:
    api.create("stays")
    api.create("goes")
    keys = "SELECT key FROM idempotency_keys WHERE tenant_id = :t ORDER BY key"
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
                "WHERE tenant_id = :t AND key = 'goes'"
            ),
            {"t": api.tenant},
        )
    await Housekeeping(engine).sweep_once()  # what the relay process runs every few minutes
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text(keys), {"t": api.tenant})).scalars().all() == ["stays"]


# --- 2. Optimistic locking -----------------------------------------------------------------


def test_confirm_with_the_current_version_sets_the_total_and_bumps_the_version(api: Api) -> None:
    order = api.draft()
    response = api.confirm(order["id"], 1, 1234)
    assert response.status_code == 200, response.text
    confirmed = response.json()
    assert (confirmed["id"], confirmed["status"]) == (order["id"], "confirmed")
    assert confirmed["version"] == 2
    assert confirmed["totalCents"] == 1234
    assert response.headers["etag"] == '"2"'
    assert api.get(order["id"]).json()["totalCents"] == 1234


def test_confirm_with_a_stale_version_is_a_conflict(api: Api) -> None:
    order = api.draft()
    assert api.confirm(order["id"], 1, 100).status_code == 200
    body = assert_error(api.confirm(order["id"], 1, 200), 409, "conflict")
    assert body["message"] == "stale version"
    assert api.get(order["id"]).json()["totalCents"] == 100


def test_confirm_without_if_match_is_428(api: Api) -> None:
    order = api.draft()
    assert_error(api.confirm(order["id"], None, 100), 428, "precondition_required")
    assert api.get(order["id"]).json()["status"] == "draft"


def test_a_malformed_if_match_is_400(api: Api) -> None:
    order = api.draft()
    assert_error(api.confirm(order["id"], "v1", 100), 400, "invalid_argument")


def test_if_match_takes_ascii_digits_only(api: Api) -> None:
    order = api.draft()
    for value in ('"\u0661"', "\u0661", '"1'):  # ARABIC-INDIC DIGIT ONE; an unclosed quote
        headers = {**api.headers(), "If-Match": value.encode()}
        response = api.http.patch(
            f"/v1/orders/{order['id']}/confirm", json={"totalCents": 5}, headers=headers
        )
        assert_error(response, 400, "invalid_argument")
    assert api.get(order["id"]).json()["version"] == 1


def test_confirming_twice_is_an_illegal_transition(api: Api) -> None:
    order = api.draft()
    assert api.confirm(order["id"], 1, 100).status_code == 200
    body = assert_error(api.confirm(order["id"], 2, 100), 409, "conflict")
    assert "confirmed" in body["message"]


def test_confirm_rejects_a_negative_or_missing_total(api: Api) -> None:
    order = api.draft()
    assert_error(api.confirm(order["id"], 1, -1), 400, "invalid_argument")
    assert_error(api.confirm(order["id"], 1, None), 400, "invalid_argument")
    assert api.get(order["id"]).json()["version"] == 1


def test_confirm_takes_the_total_from_the_items(api: Api) -> None:
    items = [
        {"sku": "A", "quantity": 2, "unitPriceCents": 250},
        {"sku": "B", "quantity": 1, "unitPriceCents": 99},
    ]
    order = api.draft({"items": items})
    assert_error(api.confirm(order["id"], 1, 1), 400, "invalid_argument")
    confirmed = api.confirm(order["id"], 1, None).json()
    assert confirmed["totalCents"] == 599
    assert confirmed["items"] == items


def test_another_tenants_order_is_not_found(http: httpx.Client, api: Api) -> None:
    order = api.draft()
    intruder = Api.of_new_customer(http, f"{api.tenant}-intruder")
    assert_error(intruder.get(order["id"]), 404, "not_found")
    assert_error(intruder.confirm(order["id"], 1, 5), 404, "not_found")
    assert_error(intruder.close(order["id"]), 404, "not_found")
    assert intruder.list().json()["items"] == []
    assert api.get(order["id"]).json()["version"] == 1


def test_an_unknown_or_malformed_id(api: Api) -> None:
    assert_error(api.get(str(uuid.uuid4())), 404, "not_found")
    assert_error(api.get("not-a-uuid"), 400, "invalid_argument")


def test_an_id_is_accepted_only_in_its_canonical_spelling(api: Api) -> None:
    order = api.draft()
    hexed = uuid.UUID(order["id"]).hex
    for spelling in (
        order["id"].upper(),
        hexed,
        "{" + order["id"] + "}",
        f"urn:uuid:{order['id']}",
    ):
        assert_error(api.get(spelling), 400, "invalid_argument")
        assert_error(api.confirm(spelling, 1, 5), 400, "invalid_argument")
        assert_error(api.close(spelling), 400, "invalid_argument")
    assert api.get(order["id"]).json()["version"] == 1


# --- 3. Close + outbox ---------------------------------------------------------------------


async def _outbox_rows(engine: AsyncEngine, order_id: str) -> list[sa.Row[tuple[object, ...]]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.text(
                "SELECT event_type, tenant_id, payload, published_at FROM outbox WHERE order_id = :id"
            ),
            {"id": order_id},
        )
        return list(result.all())


async def test_close_writes_exactly_one_outbox_row(api: Api, engine: AsyncEngine) -> None:
    order = api.draft()
    api.confirm(order["id"], 1, 4200)
    response = api.close(order["id"])
    assert response.status_code == 200, response.text
    closed = response.json()
    assert (closed["id"], closed["status"], closed["version"]) == (order["id"], "closed", 3)
    assert api.get(order["id"]).json()["status"] == "closed"

    rows = await _outbox_rows(engine, order["id"])
    assert len(rows) == 1
    # published_at: set once the platform's relay has moved it (tests/e2e/test_order_events.py).
    event_type, tenant_id, payload, _ = rows[0]
    assert event_type == "orders.closed"
    assert tenant_id == api.tenant
    assert set(payload) == {"orderId", "tenantId", "totalCents", "closedAt"}
    assert (payload["orderId"], payload["tenantId"], payload["totalCents"]) == (
        order["id"],
        api.tenant,
        4200,
    )
    assert _utc(payload["closedAt"]) == _utc(closed["closedAt"])


async def test_closing_twice_or_a_draft_writes_no_more_events(
    api: Api, engine: AsyncEngine
) -> None:
    draft = api.draft()
    assert_error(api.close(draft["id"]), 409, "conflict")
    assert await _outbox_rows(engine, draft["id"]) == []

    order = api.draft()
    api.confirm(order["id"], 1, 10)
    assert api.close(order["id"]).status_code == 200
    assert_error(api.close(order["id"]), 409, "conflict")
    assert len(await _outbox_rows(engine, order["id"])) == 1


async def test_concurrent_closes_write_one_event(
    platform: State, api: Api, engine: AsyncEngine
) -> None:
    order = api.draft()
    api.confirm(order["id"], 1, 10)
    async with httpx.AsyncClient(base_url=platform.rest_url, timeout=20) as client:
        responses = await asyncio.gather(
            *[
                client.post(f"/v1/orders/{order['id']}/close", headers=api.headers())
                for _ in range(10)
            ]
        )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 9
    assert len(await _outbox_rows(engine, order["id"])) == 1


def test_close_checks_if_match_when_given(api: Api) -> None:
    order = api.draft()
    api.confirm(order["id"], 1, 10)
    assert_error(api.close(order["id"], version=1), 409, "conflict")
    assert api.close(order["id"], version=2).json()["version"] == 3


# --- 4. Pagination -------------------------------------------------------------------------


def _pages(api: Api, limit: int, cursor: str | None = None) -> list[list[str]]:
    """The ids of every page from `cursor` (or the first page) to the last."""
    pages: list[list[str]] = []
    while True:
        params: dict[str, object] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        body = api.list(**params).json()
        pages.append([o["id"] for o in body["items"]])
        cursor = body.get("nextCursor")
        if not cursor:
            return pages


def test_pagination_pages_fifteen_orders_as_ten_then_five_without_duplicates(api: Api) -> None:
    created = [api.draft()["id"] for _ in range(15)]
    pages = _pages(api, 10)
    assert [len(p) for p in pages] == [10, 5]
    seen = pages[0] + pages[1]
    assert len(set(seen)) == 15
    assert seen == list(reversed(created))  # newest first


def test_pagination_is_stable_under_concurrent_inserts(api: Api) -> None:
    created = [api.draft()["id"] for _ in range(12)]
    first = api.list(limit=5).json()
    for _ in range(4):
        api.draft()  # newer orders land before the cursor, never inside later pages
    rest = [i for page in _pages(api, 5, first["nextCursor"]) for i in page]
    seen = [o["id"] for o in first["items"]] + rest
    assert seen == list(reversed(created))


def test_pagination_of_an_empty_list_has_items_and_no_cursor(api: Api) -> None:
    assert api.list().json() == {"items": []}


def test_pagination_refuses_a_tampered_or_foreign_cursor(http: httpx.Client, api: Api) -> None:
    for _ in range(3):
        api.draft()
    cursor = api.list(limit=1).json()["nextCursor"]
    body, mac = cursor.split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    assert_error(api.list(limit=1, cursor=tampered), 400, "invalid_argument")
    assert_error(api.list(limit=1, cursor="not-a-cursor"), 400, "invalid_argument")
    other = Api.of_new_customer(http, f"{api.tenant}-other")
    assert_error(other.list(limit=1, cursor=cursor), 400, "invalid_argument")


@pytest.mark.parametrize("limit", [-1, 101])
def test_limit_out_of_range_is_400(api: Api, limit: int) -> None:
    assert_error(api.list(limit=limit), 400, "invalid_argument")


# --- Errors produced by Envoy itself -------------------------------------------------------


def test_unknown_route_is_a_json_404(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing-here"), 404, "not_found")


def test_the_edge_answers_its_own_health_check(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "serving"}


def test_malformed_json_is_a_json_400(api: Api) -> None:
    response = api.http.post(
        "/v1/orders",
        content=b'{"customerRef": ',
        headers=api.headers(Idempotency_Key="k", Content_Type="application/json"),
    )
    assert_error(response, 400, "invalid_argument")
    assert api.list().json()["items"] == []


def test_an_unknown_query_parameter_is_400(api: Api) -> None:
    assert_error(api.list(color="red"), 400, "invalid_argument")


def test_an_oversized_body_is_a_json_413(api: Api) -> None:
    huge = b'{"customerRef": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = api.http.post(
        "/v1/orders",
        content=huge,
        headers=api.headers(Idempotency_Key="big", Content_Type="application/json"),
    )
    assert_error(response, 413, "payload_too_large")
    assert api.list().json()["items"] == []


def test_rest_responses_carry_no_grpc_framing_headers_and_a_request_id(api: Api) -> None:
    response = api.create("hdr", {})
    assert not [h for h in response.headers if h.startswith("grpc-")]
    assert response.headers["x-request-id"]
    mine = api.http.get("/v1/orders", headers={**api.headers(), "X-Request-Id": "req-abc-123"})
    assert mine.headers["x-request-id"] == "req-abc-123"


def _access_line(platform: State, request_id: str) -> dict[str, Any]:
    """The order service's access-log event for one request (written as the call completes)."""
    for _ in range(100):
        log = (Path(platform.logs_dir) / "order.log").read_text()
        events = [json.loads(line) for line in log.splitlines() if request_id in line]
        if events:
            assert len(events) == 1
            event: dict[str, Any] = events[0]
            return event
        time.sleep(0.05)
    raise AssertionError(f"no log line for request {request_id}")


def test_the_request_id_reaches_the_service_log_line(platform: State, api: Api) -> None:
    request_id = f"trace-me-{uuid.uuid4().hex}"
    api.http.get("/v1/orders", headers={**api.headers(), "X-Request-Id": request_id})
    event = _access_line(platform, request_id)
    assert event["request_id"] == request_id
    assert event["tenant"] == api.tenant
    assert (event["service"], event["rpc_method"], event["status"]) == ("order", "ListOrders", "OK")
    assert event["duration_ms"] >= 0


def test_a_client_traceparent_is_continued_by_the_service(platform: State, api: Api) -> None:
    trace_id = uuid.uuid4().hex
    request_id = f"traced-{uuid.uuid4().hex}"
    headers = {
        **api.headers(),
        "X-Request-Id": request_id,
        "traceparent": f"00-{trace_id}-{'1' * 16}-01",
    }
    assert api.http.get("/v1/orders", headers=headers).status_code == 200
    assert _access_line(platform, request_id)["trace_id"] == trace_id
