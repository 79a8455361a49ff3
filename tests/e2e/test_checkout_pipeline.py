"""Checkout end to end through Envoy: the pipeline takes a placed order through
payment to fulfilment, compensates a decline, and cancels with compensation before,
during and after the charge; admins move orders only along the machine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from services.launcher.platform import State
from tests import checkout, identity
from tests.e2e.conftest import assert_error
from tests.upstream_admin import StubAdmin

pytestmark = pytest.mark.e2e


@pytest.fixture
def payments(platform: State) -> Iterator[StubAdmin]:
    admin = StubAdmin(platform.urls["PAYMENTS_URL"])
    yield admin
    admin.clear()


def _place(http: httpx.Client, buyer: identity.Account, product: str, n: int = 1) -> dict:
    placed = http.post(
        "/v1/orders",
        json=checkout.order_body((product, n)),
        headers=buyer.headers(**{"Idempotency-Key": uuid.uuid4().hex}),
    )
    assert placed.status_code == 201, placed.text
    return dict(placed.json())


def _history(http: httpx.Client, buyer: identity.Account, order_id: str) -> list[str]:
    view = http.get(f"/v1/orders/{order_id}/status", headers=buyer.headers())
    assert view.status_code == 200, view.text
    return [step["toStatus"] for step in view.json()["history"]]


def test_a_placed_order_is_paid_once_fulfilled_and_its_stock_committed(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyer = identity.customer(http, tenant)
    product = checkout.product(http, admin, price_cents=1250, stock=10)
    order = _place(http, buyer, product, 2)

    done = checkout.wait_for_status(http, buyer.headers(), order["id"], checkout.settled)
    assert done["status"] == "fulfilled", done
    assert done["paymentStatus"] == "captured"
    assert _history(http, buyer, order["id"]) == ["reserved", "paid", "fulfilled"]
    ledger = checkout.payments_ledger(platform, tenant, order["id"])
    assert (ledger["captures"]["count"], ledger["captures"]["amountCents"]) == (1, 2500)
    level = checkout.stock(http, tenant, product)
    assert (level["available"], level["reserved"]) == (8, 0)


def test_a_declined_payment_fails_the_order_and_gives_the_stock_back(
    http: httpx.Client, platform: State, tenant: str, payments: StubAdmin
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyer = identity.customer(http, tenant)
    product = checkout.product(http, admin, price_cents=500, stock=3)
    payments.faults(tenant=tenant, decline_rate=1.0, decline_code="card_declined")
    order = _place(http, buyer, product)

    done = checkout.wait_for_status(http, buyer.headers(), order["id"], checkout.settled)
    assert (done["status"], done["failureReason"]) == ("failed", "payment_declined"), done
    assert done["paymentStatus"] == "declined"
    assert checkout.payments_ledger(platform, tenant, order["id"])["captures"]["count"] == 0
    # The release follows the failure (its own step, driven by `orders.failed`).
    assert checkout.wait_for_stock(http, tenant, product, available=3)["reserved"] == 0


def test_cancel_before_the_charge_releases_the_stock(
    http: httpx.Client, platform: State, tenant: str, payments: StubAdmin
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyer = identity.customer(http, tenant)
    product = checkout.product(http, admin, price_cents=500, stock=3)
    # The provider is down for this tenant: the charge cannot start, the order waits.
    payments.faults(tenant=tenant, down=True)
    order = _place(http, buyer, product)
    cancelled = http.put(f"/v1/orders/{order['id']}/cancel", json={}, headers=buyer.headers())
    assert cancelled.status_code in (200, 202), cancelled.text
    payments.clear()
    done = checkout.wait_for_status(http, buyer.headers(), order["id"], checkout.settled)
    assert done["status"] in ("cancelled", "refunded"), done
    level = checkout.wait_for_stock(http, tenant, product, available=3)
    assert level["reserved"] == 0


def test_cancel_during_the_charge_is_accepted_and_settles_with_a_refund(
    http: httpx.Client, platform: State, tenant: str, payments: StubAdmin
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyer = identity.customer(http, tenant)
    product = checkout.product(http, admin, price_cents=700, stock=3)
    payments.faults(tenant=tenant, latency_ms=2500)
    order = _place(http, buyer, product)
    charging = checkout.wait_for_status(
        http, buyer.headers(), order["id"], lambda o: o.get("paymentStatus") == "pending"
    )
    assert charging["status"] == "reserved"
    accepted = http.put(f"/v1/orders/{order['id']}/cancel", json={}, headers=buyer.headers())
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["cancelRequested"] is True

    done = checkout.wait_for_status(http, buyer.headers(), order["id"], checkout.settled)
    assert done["status"] == "refunded", done
    ledger = checkout.payments_ledger(platform, tenant, order["id"])
    assert ledger["captures"]["count"] == 1
    assert ledger["refunds"]["amountCents"] == 700
    checkout.wait_for_stock(http, tenant, product, available=3)


def test_cancel_after_the_charge_refunds_and_after_fulfilment_is_refused(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin_account = identity.admin(http, platform, tenant)
    admin = admin_account.headers()
    buyer = identity.customer(http, tenant)
    product = checkout.product(http, admin, price_cents=300, stock=5)

    fulfilled = _place(http, buyer, product)
    checkout.wait_for_status(
        http, buyer.headers(), fulfilled["id"], lambda o: o["status"] == "fulfilled"
    )
    refused = http.put(f"/v1/orders/{fulfilled['id']}/cancel", json={}, headers=buyer.headers())
    assert_error(refused, 409, "conflict")
    other = identity.customer(http, tenant)
    assert_error(
        http.put(f"/v1/orders/{fulfilled['id']}/cancel", json={}, headers=other.headers()),
        404,
        "not_found",
    )

    # An admin moves only along the machine, and a customer not at all.
    assert_error(
        http.put(
            f"/v1/admin/orders/{fulfilled['id']}/status",
            json={"status": "paid"},
            headers=buyer.headers(),
        ),
        403,
        "permission_denied",
    )
    assert_error(
        http.put(
            f"/v1/admin/orders/{fulfilled['id']}/status", json={"status": "cancelled"},
            headers=admin,
        ),
        409,
        "conflict",
    )  # fmt: skip
    assert_error(
        http.put(
            f"/v1/admin/orders/{fulfilled['id']}/status", json={"status": "nonsense"},
            headers=admin,
        ),
        400,
        "invalid_argument",
    )  # fmt: skip


def test_the_live_stream_shows_a_placed_order_through_to_fulfilment_in_order(
    http: httpx.Client, platform: State, tenant: str, payments: StubAdmin
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    buyer = identity.customer(http, tenant)
    product = checkout.product(http, admin, price_cents=900, stock=2)
    # A slow provider, so the stream is open before the charge settles.
    payments.faults(tenant=tenant, latency_ms=1000)
    order = _place(http, buyer, product)
    seen: list[tuple[str, int]] = []
    with http.stream(
        "GET", f"/v1/orders/{order['id']}/watch", headers=buyer.headers(), timeout=20.0
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for event in checkout.sse_events(stream):
            if not seen or event["version"] > seen[-1][1]:
                seen.append((event["status"], event["version"]))
            if event.get("terminal"):
                break
    assert [s for s, _ in seen] == ["reserved", "paid", "fulfilled"], seen
    assert [v for _, v in seen] == [1, 2, 3]
