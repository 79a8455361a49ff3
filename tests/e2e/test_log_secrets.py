"""No secret reaches a log: every flow is driven through the edge, then every log file is searched.

The flows run first, with secrets of this test (passwords, the tokens they
get, webhook signatures), successes and failures alike: the failures are
where secrets used to leak (a NUL in a registration made PostgreSQL fail
with the Argon2id hash among the traceback's bound parameters). Then every
file in the test platform's log directory is searched for those values and
for the shapes of any secret of the session (password hashes, JWTs, webhook
secrets, the test users' password); the failure names file and line.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from pathlib import Path

import httpx
import pytest
from pymongo.database import Database

from services.launcher.platform import State
from tests import identity
from tests.e2e.test_events_api import next_shipment
from tests.webhooks import COURIER, Document, new_event_id, status_event

# Late: it searches the logs the whole session wrote, every other test's flows too.
pytestmark = [pytest.mark.e2e, pytest.mark.late]

SHAPES = {
    "an Argon2id hash": re.compile(r"\$argon2id\$"),
    "a JWT": re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{16,}"),
    "a webhook secret": re.compile(r"whsec_"),
}
# Envoy flushes its access log once a second.
FLUSH_S = 1.5


def _passphrase() -> str:
    return f"pw {secrets.token_urlsafe(12)} pw"


def _drive_every_flow(http: httpx.Client, platform: State) -> dict[str, str]:
    """Walk the platform's flows, good and bad; the secret values they used, by name."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    first, second, wrong = _passphrase(), _passphrase(), _passphrase()
    name = f"s-{uuid.uuid4().hex[:8]}"
    email = f"{name}@example.com"
    anonymous = {"X-Tenant-Id": tenant}
    registered = http.post(
        "/v1/users", json={"email": email, "username": name, "password": first}, headers=anonymous
    )
    assert registered.status_code == 201, registered.text
    ann = identity.login(http, tenant, email, first)
    http.post("/v1/auth/login", json={"email": email, "password": wrong}, headers=anonymous)
    http.post("/v1/auth/login", json={"username": name, "password": wrong}, headers=anonymous)
    changed = http.put(
        f"/v1/users/{ann.id}",
        json={"password": second, "currentPassword": first},
        headers=ann.headers(If_Match='"1"'),
    )
    assert changed.status_code == 200, changed.text
    http.put(
        f"/v1/users/{ann.id}",
        json={"password": first, "currentPassword": wrong},
        headers=ann.headers(If_Match='"2"'),
    )
    ann = identity.login(http, tenant, email, second)
    # Bad input with real secrets in the same body: refused before any effect.
    for body in (
        {"email": f"x{name}\u0000@example.com", "username": f"x{name}", "password": second},
        {"email": f"y{name}@example.com", "username": f"y{name}\u0000", "password": second},
    ):
        http.post("/v1/users", json=body, headers=anonymous)
    http.post(
        "/v1/auth/login", json={"email": f"{email}\u0000", "password": second}, headers=anonymous
    )
    # Orders, as a customer.
    order_key = uuid.uuid4().hex
    http.post(
        "/v1/orders",
        json={
            "customerRef": "ref",
            "items": [{"sku": "SKU-1", "quantity": 1, "unitPriceCents": 1}],
        },
        headers=ann.headers(Idempotency_Key=order_key),
    )
    http.post(
        "/v1/orders", json={"customerRef": "a\u0000"}, headers=ann.headers(Idempotency_Key="k2")
    )
    http.get("/v1/orders", headers=ann.headers())
    # Product writes, as an admin.
    admin = identity.admin(http, platform, tenant)
    product = {"sku": "SECRET-1", "name": "Widget", "priceCents": 1}
    made = http.post("/v1/products", json=product, headers=admin.headers(Idempotency_Key="p1"))
    http.put(
        f"/v1/products/{made.json()['id']}",
        json={"name": "Widget 2", "priceCents": 2},
        headers=admin.headers(Idempotency_Key="p2", If_Match='"1"'),
    )
    http.post(
        "/v1/products",
        json={**product, "name": "bad\u0000"},
        headers=admin.headers(Idempotency_Key="p3"),
    )
    # Signed webhooks, a forged one, and the dead-letter list.
    event = status_event(next_shipment())
    delivered = COURIER.deliver(http, event, event_id=new_event_id())
    assert delivered.status_code in (200, 202), delivered.text
    signature = COURIER.headers(b"{}", event_id="evt_x")["webhook-signature"]
    forged = {**COURIER.headers(b"{}", event_id="evt_y"), "webhook-signature": signature}
    http.post(f"/v1/events/{COURIER.source}", content=b"{}", headers=forged)
    courier_admin = identity.admin(http, platform, COURIER.tenant)
    http.get("/v1/admin/dlq", headers=courier_admin.headers())
    # Tokens that are refused: tampered, expired-looking, not a JWT at all.
    tampered = ann.token[:-4] + ("AAAA" if not ann.token.endswith("AAAA") else "BBBB")
    for token in (tampered, "not-a-token", f"{ann.token}x"):
        http.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    # A token in the query string is never read as a credential, nor logged.
    http.get("/v1/users/me", params={"access_token": ann.token})
    http.get("/v1/products", params={"access_token": admin.token}, headers=anonymous)
    return {
        "the first password": first,
        "the second password": second,
        "a wrong password": wrong,
        "the test users' password": identity.PASSWORD,
        "a customer's token": ann.token,
        "an admin's token": admin.token,
        "the courier admin's token": courier_admin.token,
        "a tampered token": tampered,
        "a webhook signature": signature,
        **{f"webhook secret {n}": s.removeprefix("whsec_") for n, s in enumerate(COURIER.secrets)},
    }


def test_no_log_holds_a_password_hash_token_or_webhook_secret(
    http: httpx.Client, platform: State, mongo: Database[Document]
) -> None:
    used = _drive_every_flow(http, platform)
    time.sleep(FLUSH_S)
    logs = sorted(p for p in Path(platform.logs_dir).rglob("*") if p.is_file())
    assert logs, "the platform writes logs"
    found: list[str] = []
    for path in logs:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            leaks = [what for what, shape in SHAPES.items() if shape.search(line)]
            leaks += [what for what, value in used.items() if value in line]
            if leaks:
                found.append(f"{path.name}:{n}: {', '.join(leaks)}")
    assert found == [], "\n".join(found[:50])
