"""The contract says what the platform does: documented replays, one error shape, and the
API reference the edge serves at /docs and /openapi/<package>.json, rendered by Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.launcher import edge_docs
from services.launcher.platform import State
from tests import identity, webhooks
from tests.contract.openapi import assert_documented
from tests.e2e.conftest import Api, assert_error

pytestmark = pytest.mark.e2e

DOCUMENTS = edge_docs.DocsFiles.here().documents()


def test_an_order_create_replay_is_a_documented_200(api: Api) -> None:
    key, body = uuid.uuid4().hex, {"customerRef": "c-1"}
    first = api.create(key, body)
    assert first.status_code == 201, first.text
    assert_documented("shop_order_v1", "POST", "/v1/orders", first)
    replay = api.create(key, body)
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (200, "true")
    assert replay.json()["id"] == first.json()["id"]
    assert_documented("shop_order_v1", "POST", "/v1/orders", replay)


def test_a_product_upsert_of_a_known_sku_is_a_documented_200(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant)
    body = {"sku": f"DOC-{uuid.uuid4().hex[:8].upper()}", "name": "Documented", "priceCents": 100}
    for status in (201, 200):
        written = http.post(
            "/v1/products", json=body, headers=admin.headers(Idempotency_Key=uuid.uuid4().hex)
        )
        assert written.status_code == status, written.text
        assert_documented("shop_product_v1", "POST", "/v1/products", written)


def test_a_duplicate_webhook_is_a_documented_200(http: httpx.Client) -> None:
    event, event_id = webhooks.status_event("shp-doc-1"), webhooks.new_event_id()
    source = webhooks.COURIER.source
    for status, duplicate in ((202, False), (200, True)):
        delivered = webhooks.COURIER.deliver(http, event, event_id=event_id)
        assert (delivered.status_code, delivered.json()["duplicate"]) == (status, duplicate)
        assert_documented("shop_event_v1", "POST", "/v1/events/{source}", delivered, source=source)


def test_a_duplicate_admin_event_is_a_documented_200(http: httpx.Client, platform: State) -> None:
    admin = identity.admin(http, platform, webhooks.COURIER.tenant)
    event = {"id": webhooks.new_event_id(), **webhooks.status_event("shp-doc-2")}
    for status in (202, 200):
        published = http.post("/v1/admin/events", json=event, headers=admin.headers())
        assert published.status_code == status, published.text
        assert_documented("shop_event_v1", "POST", "/v1/admin/events", published)


def test_edge_and_service_errors_have_one_documented_shape(api: Api, http: httpx.Client) -> None:
    """Envoy's own replies (no token; a body over 1 MiB) and a service's (a malformed id)
    alike: details is an array holding one google.rpc.ErrorInfo."""
    huge = b"{" + b" " * (1024 * 1024 + 1) + b"}"
    cases = [
        (http.get("/v1/orders"), 401, "unauthenticated", "edge", ("GET", "/v1/orders", {})),
        (
            http.post("/v1/orders", content=huge, headers=api.headers()),
            413, "payload_too_large", "edge", ("POST", "/v1/orders", {}),
        ),
        (
            api.get("not-a-uuid"),
            400, "invalid_argument", "shop.platform", ("GET", "/v1/orders/{id}", {"id": "not-a-uuid"}),
        ),
    ]  # fmt: skip
    for response, status, code, domain, (method, path, params) in cases:
        error = assert_error(response, status, code)
        info = error["details"][0]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo", error
        assert info["domain"] == domain, error
        assert_documented("shop_order_v1", method, path, response, **params)


def test_the_jwks_is_documented_json(http: httpx.Client) -> None:
    jwks = http.get("/.well-known/jwks.json")
    assert jwks.headers["content-type"] == "application/json"
    assert {"kty", "crv", "x", "kid", "alg", "use"} <= set(jwks.json()["keys"][0])
    assert_documented("shop_user_v1", "GET", "/.well-known/jwks.json", jwks)


def test_the_edge_serves_every_document_and_the_reference_without_a_token(
    http: httpx.Client,
) -> None:
    for package, path in DOCUMENTS.items():
        served = http.get(f"/openapi/{package}.json")
        assert served.status_code == 200, (package, served.text[:200])
        assert served.headers["content-type"] == "application/json"
        assert served.content == path.read_bytes()
    page = http.get("/docs")
    assert (page.status_code, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert "cdn" not in page.text.lower()
    for name, kind in edge_docs.ASSETS.items():
        asset = http.get(f"/docs/assets/{name}")
        assert (asset.status_code, asset.headers["content-type"]) == (200, kind), name
        assert len(asset.content) > 10_000, name
    assert_error(http.get("/openapi/shop.nothing.v9.json"), 404, "not_found")


def operation_ids(document: dict[str, Any]) -> list[str]:
    return [op["operationId"] for ops in document["paths"].values() for op in ops.values()]


def test_the_docs_page_renders_every_operation_in_headless_chromium(
    platform: State, tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    rendered = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
         "--dump-dom", f"{platform.rest_url}/docs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "Shop platform API reference" in rendered
    for package, path in DOCUMENTS.items():
        for operation_id in operation_ids(json.loads(path.read_text())):
            assert f">{operation_id}<" in rendered, f"{package}: {operation_id} did not render"
