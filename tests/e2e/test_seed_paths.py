"""Seed 002's paths under `/api/v1/...` answer as the platform's `/v1/...` do (one
rewrite in the edge's Lua filter, before the transcoder)."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.conftest import Api, assert_error


def test_a_public_read_answers_under_the_seeds_prefix(http: httpx.Client) -> None:
    headers = {"X-Tenant-Id": "demo"}
    ours = http.get("/v1/products", params={"limit": 2}, headers=headers)
    seeds = http.get("/api/v1/products", params={"limit": 2}, headers=headers)
    assert ours.status_code == seeds.status_code == 200, seeds.text
    assert seeds.json()["items"] == ours.json()["items"]


def test_an_authenticated_write_and_read_answer_under_the_seeds_prefix(
    http: httpx.Client, api: Api
) -> None:
    created = http.post(
        "/api/v1/orders",
        json={},
        headers=api.headers(Idempotency_Key=uuid.uuid4().hex),
    )
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    fetched = http.get(f"/api/v1/orders/{order_id}", headers=api.headers())
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == api.get(order_id).json()


def test_the_seeds_prefix_keeps_every_check(http: httpx.Client, api: Api) -> None:
    # No token: the same refusal as under /v1 (the rules match the method, not the path).
    assert_error(http.get("/api/v1/orders"), 401, "unauthenticated")
    # Another customer's order stays another customer's.
    other = Api.of_new_customer(http, api.tenant).draft()
    assert_error(http.get(f"/api/v1/orders/{other['id']}", headers=api.headers()), 404, "not_found")
    # Only the whole segment is rewritten.
    assert http.get("/api/v1x/orders", headers=api.headers()).status_code == 404
