"""Live order status and live stock through Envoy: Server-Sent Events from WatchOrder and
WatchStock, and the page at /orders/{id}/live that shows an order's statuses as they happen.

Orders are placed here directly in the database (services/order/repository.insert_placed
and transitions.placed in one unit of work) and moved with transitions.moved, the one
path every status change takes, so each change commits with its notification; their
outbox events are dropped before commit, so the platform's pipeline leaves them to the
test. tests/e2e/test_checkout_pipeline.py watches a really placed order instead.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.kit import db
from services.launcher.platform import State
from services.order.domain import Order, OrderStatus
from tests import browser, checkout, identity
from tests.e2e.conftest import Api, assert_error
from tests.scrapes import scrape, value

pytestmark = pytest.mark.e2e

S = OrderStatus


def _placed(platform: State, account: identity.Account) -> str:
    """A new pending order of `account`, kept from the platform's pipeline."""

    async def place() -> str:
        engine = db.create_engine(platform.database_url, pool_size=1)
        try:
            order = await checkout.write_placed(
                engine, account.tenant, account.id, hidden_from_pipeline=True
            )
            return str(order.id)
        finally:
            await engine.dispose()

    return asyncio.run(place())


def _move(platform: State, tenant: str, order_id: str, to: OrderStatus) -> Order:
    async def move() -> Order:
        engine = db.create_engine(platform.database_url, pool_size=1)
        try:
            return await checkout.write_move(
                engine, tenant, uuid.UUID(order_id), to, hidden_from_pipeline=True
            )
        finally:
            await engine.dispose()

    return asyncio.run(move())


def _changes(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each version once: keep-alive repeats of the current one are skipped."""
    last = -1
    for event in events:
        if event["version"] > last:
            last = event["version"]
            yield event


@contextmanager
def _watch(http: httpx.Client, path: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
    with http.stream("GET", path, headers=headers, timeout=httpx.Timeout(10.0)) as response:
        yield response


def test_a_customer_watches_their_order_from_its_status_now_to_its_final_one(
    http: httpx.Client, platform: State, api: Api
) -> None:
    order_id = _placed(platform, api.account)
    with _watch(http, f"/v1/orders/{order_id}/watch", api.headers()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        seen = _changes(checkout.sse_events(response))
        first = next(seen)
        assert (first["orderId"], first["status"], first["version"]) == (order_id, "pending", 1)
        assert first["terminal"] is False
        statuses = []
        for status in (S.RESERVED, S.PAID, S.FULFILLED):
            moved = _move(platform, api.tenant, order_id, status)
            event = next(seen)
            statuses.append((event["status"], event["version"], event["terminal"]))
            assert event["version"] == moved.version
        assert statuses == [("reserved", 2, False), ("paid", 3, False), ("fulfilled", 4, True)]
        started = time.monotonic()
        assert list(seen) == [], "nothing follows a terminal status"
        assert time.monotonic() - started < 5, "the stream ends after the terminal status"


def test_a_quiet_stream_repeats_the_current_status_to_keep_the_connection(
    http: httpx.Client, platform: State, api: Api
) -> None:
    """The platform fixture sets a 1 s keep-alive (15 s in production)."""
    order_id = _placed(platform, api.account)
    with _watch(http, f"/v1/orders/{order_id}/watch", api.headers()) as response:
        events = checkout.sse_events(response)
        first, repeat = next(events), next(events)
        assert (repeat["status"], repeat["version"]) == (first["status"], first["version"])


def test_another_customers_or_tenants_order_cannot_be_watched(
    http: httpx.Client, platform: State, api: Api, tenant: str
) -> None:
    order_id = _placed(platform, api.account)
    stranger = Api.of_new_customer(http, tenant)
    elsewhere = Api.of_new_customer(http, f"t-{uuid.uuid4().hex[:12]}")
    for other in (stranger, elsewhere):
        assert_error(
            http.get(f"/v1/orders/{order_id}/watch", headers=other.headers()), 404, "not_found"
        )
    assert_error(http.get(f"/v1/orders/{order_id}/watch"), 401, "unauthenticated")
    assert_error(
        http.get("/v1/orders/not-an-id/watch", headers=api.headers()), 400, "invalid_argument"
    )
    # Their own order's admin sees it: tenant-wide, like GetOrder.
    admin = identity.admin(http, platform, tenant)
    with _watch(http, f"/v1/orders/{order_id}/watch", admin.headers()) as response:
        assert response.status_code == 200
        assert next(checkout.sse_events(response))["status"] == "pending"


def test_anyone_watches_a_products_stock_and_sees_a_restock(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    product = str(uuid.uuid4())
    with _watch(http, f"/v1/inventory/{product}/watch", {"X-Tenant-Id": tenant}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        seen = _changes(checkout.sse_events(response))
        now = next(seen)
        assert (now["productId"], now["available"], now["version"]) == (product, 0, 0)
        for version, available in ((0, 7), (1, 4)):
            restocked = http.put(
                f"/v1/admin/inventory/{product}",
                json={"available": available, "lowStockThreshold": 2},
                headers={
                    **admin,
                    "If-Match": f'"{version}"',
                    "Idempotency-Key": uuid.uuid4().hex,
                },
            )
            assert restocked.status_code == 200, restocked.text
            event = next(seen)
            assert (event["available"], event["version"]) == (available, version + 1)
            assert event["tenantId"] == tenant
    assert_error(http.get(f"/v1/inventory/{product}/watch"), 400, "invalid_argument")


def test_the_live_page_is_served_without_a_token_and_runs_only_its_own_script(
    http: httpx.Client,
) -> None:
    page = http.get(f"/orders/{uuid.uuid4()}/live")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "/watch" in page.text
    assert "Authorization" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'sha256-" in policy
    assert "connect-src 'self'" in policy
    assert page.headers["cache-control"] == "no-store"
    assert http.get("/orders/x/y/live").status_code == 404


def _watch_calls(platform: State) -> float:
    return sum(
        value(scrape(url), "grpc_server_started_total", {"grpc_method": "WatchOrder"})
        for url in platform.metrics["order"]
    )


def test_the_live_page_shows_each_status_as_it_happens_in_headless_chromium(
    http: httpx.Client, platform: State, api: Api, tmp_path: Path
) -> None:
    chrome = browser.chromium()
    if chrome is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    order_id = _placed(platform, api.account)
    before = _watch_calls(platform)
    url = f"{platform.rest_url}/orders/{order_id}/live#token={api.account.token}"
    shown = "JSON.stringify([...document.querySelectorAll('.status')].map(e => e.dataset.status))"
    with browser.open_page(chrome, url, tmp_path / "profile") as page:
        deadline = time.monotonic() + 30
        while _watch_calls(platform) <= before:
            assert time.monotonic() < deadline, "the page never opened the stream"
            time.sleep(0.2)
        expected = ["pending"]
        for status in (S.RESERVED, S.PAID, S.FULFILLED):  # fulfilled is terminal
            until = time.monotonic() + 10
            while json.loads(page.evaluate(shown) or "[]") != expected:
                assert time.monotonic() < until, (expected, page.evaluate(shown))
                time.sleep(0.1)
            _move(platform, api.tenant, order_id, status)
            expected.append(status.value)
        until = time.monotonic() + 10
        while json.loads(page.evaluate(shown) or "[]") != expected:
            assert time.monotonic() < until, (expected, page.evaluate(shown))
            time.sleep(0.1)
        assert expected == ["pending", "reserved", "paid", "fulfilled"]
        until = time.monotonic() + 10
        while "Final status reached" not in (page.evaluate("document.body.innerText") or ""):
            assert time.monotonic() < until, page.evaluate("document.body.innerText")
            time.sleep(0.1)
