"""Strings no request may carry, through the edge: a 400 naming the field, and nothing written.

A NUL (or any other control character) in any JSON string used to reach
PostgreSQL and come back as a 500, for a product only after the ERP had
stored it, so every retry of that key failed again. The services' one
interceptor now refuses such strings before any handler runs.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from services.launcher.platform import State
from tests import identity
from tests.e2e.conftest import Api, assert_error
from tests.e2e.test_products_api import Products
from tests.identity import PASSWORD
from tests.upstream_admin import StubAdmin

pytestmark = pytest.mark.e2e

NUL = "\u0000"


def _refused(response: httpx.Response, field: str) -> None:
    body = assert_error(response, 400, "invalid_argument")
    assert body["message"].startswith(f"{field}: must not contain control characters"), body
    assert "\x00" not in response.text  # the refusal never echoes the character back
    violations = [d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert violations[0]["fieldViolations"][0]["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customerRef": f"ref{NUL}"}, "customerRef"),
        (
            {
                "items": [
                    {"sku": "SKU-1", "quantity": 1, "unitPriceCents": 1},
                    {"sku": f"SKU{NUL}2", "quantity": 1, "unitPriceCents": 1},
                ]
            },
            "items[1].sku",
        ),
        ({"customerRef": "ref\u001b[2J"}, "customerRef"),
    ],
)
def test_an_order_with_a_control_character_is_refused_and_not_stored(
    api: Api, body: dict[str, Any], field: str
) -> None:
    _refused(api.create("order-key", body), field)
    assert api.list().json()["items"] == []
    # Nothing was stored under the key either: the corrected request goes through.
    fixed = api.create("order-key", {"customerRef": "ref"})
    assert fixed.status_code == 201, fixed.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": f"ann{NUL}@example.com", "username": "ann-nul", "password": PASSWORD}, "email"),
        ({"email": "ann@example.com", "username": f"ann{NUL}", "password": PASSWORD}, "username"),
        ({"email": "ann@example.com", "username": "ann-nul", "password": f"{PASSWORD}{NUL}"},
         "password"),
    ],
)  # fmt: skip
def test_a_registration_with_a_control_character_is_refused_and_no_user_made(
    http: httpx.Client, tenant: str, body: dict[str, Any], field: str
) -> None:
    headers = {"X-Tenant-Id": tenant}
    _refused(http.post("/v1/users", json=body, headers=headers), field)
    clean = {"email": "ann@example.com", "username": "ann-nul", "password": PASSWORD}
    assert http.post("/v1/users", json=clean, headers=headers).status_code == 201  # nothing taken


def test_a_login_with_a_control_character_is_refused(http: httpx.Client, tenant: str) -> None:
    headers = {"X-Tenant-Id": tenant}
    for body, field in [
        ({"email": f"ann@example.com{NUL}", "password": PASSWORD}, "email"),
        ({"username": f"ann{NUL}", "password": PASSWORD}, "username"),
    ]:
        _refused(http.post("/v1/auth/login", json=body, headers=headers), field)


def test_a_user_update_with_a_control_character_changes_nothing(
    http: httpx.Client, tenant: str
) -> None:
    ann = identity.customer(http, tenant)
    for body, field in [
        ({"username": f"ann{NUL}x"}, "username"),
        ({"email": f"x{NUL}@example.com"}, "email"),
        ({"password": "a new passphrase!", "currentPassword": f"{PASSWORD}{NUL}"},
         "currentPassword"),
    ]:  # fmt: skip
        response = http.put(f"/v1/users/{ann.id}", json=body, headers=ann.headers(If_Match='"1"'))
        _refused(response, field)
    me = http.get("/v1/users/me", headers=ann.headers()).json()
    assert (me["version"], me["email"]) == (1, ann.email)


@pytest.fixture
def products(platform: State, http: httpx.Client, tenant: str) -> Products:
    return Products(http, tenant, identity.admin(http, platform, tenant))


@pytest.fixture
def erp(platform: State) -> StubAdmin:
    return StubAdmin(platform.erp_url)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sku": "NUL-1", "name": f"Widget{NUL}", "priceCents": 1}, "name"),
        ({"sku": "NUL-1", "name": "Widget", "description": f"a{NUL}b", "priceCents": 1},
         "description"),
        ({"sku": "NUL-1", "name": "Widget", "description": "bell\u0007", "priceCents": 1},
         "description"),
    ],
)  # fmt: skip
def test_a_product_write_with_a_control_character_never_reaches_the_erp(
    products: Products, erp: StubAdmin, body: dict[str, Any], field: str
) -> None:
    key = uuid.uuid4().hex
    erp.reset_stats()
    _refused(products.create(body, key=key), field)
    assert erp.requests("POST /products") == 0
    assert products.list().json()["items"] == []
    # The same key with the corrected body is a first write, not a replay of a failure.
    fixed = products.create({"sku": "NUL-1", "name": "Widget", "priceCents": 1}, key=key)
    assert fixed.status_code == 201, fixed.text
    made = fixed.json()
    erp.reset_stats()
    update = {k: v for k, v in body.items() if k != "sku"}
    _refused(products.put(made["id"], update, version=1), field)
    assert erp.requests("PUT /products/{id}") == 0
    assert products.get(made["id"]).json()["version"] == 1


def test_a_description_keeps_its_line_breaks_and_tabs(products: Products) -> None:
    text = "Line one\nLine two\r\n\tindented"
    made = products.create(
        {"sku": "TEXT-1", "name": "Widget", "description": text, "priceCents": 1}
    )
    assert made.status_code == 201, made.text
    assert products.get(made.json()["id"]).json()["description"] == text


def test_overlong_strings_are_refused_before_any_effect(api: Api) -> None:
    body = assert_error(api.create("long", {"customerRef": "r" * 1025}), 400, "invalid_argument")
    assert body["message"] == "customerRef: must be at most 1024 characters"
    assert api.list().json()["items"] == []


def test_a_wrong_current_password_is_a_400_naming_the_field(
    http: httpx.Client, tenant: str
) -> None:
    ann = identity.customer(http, tenant)
    for proof in ({}, {"currentPassword": "not my password"}):
        response = http.put(
            f"/v1/users/{ann.id}",
            json={"password": "a new passphrase!", **proof},
            headers=ann.headers(If_Match='"1"'),
        )
        # Not 401: the token is fine, and a 401 sends a client off to log in again.
        body = assert_error(response, 400, "invalid_argument")
        assert body["message"] == "currentPassword: is missing or wrong"
    assert identity.login(http, tenant, ann.email).id == ann.id  # the password is unchanged
