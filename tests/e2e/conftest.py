"""REST clients for the edge: one tenant per test, and a customer of it logged in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.launcher.platform import State
from tests import identity


class Api:
    """A thin REST client of one logged-in user, speaking to Envoy."""

    def __init__(self, http: httpx.Client, account: identity.Account) -> None:
        self.http = http
        self.account = account
        self.tenant = account.tenant

    @classmethod
    def of_new_customer(cls, http: httpx.Client, tenant: str) -> Api:
        return cls(http, identity.customer(http, tenant))

    def headers(self, **extra: str) -> dict[str, str]:
        return self.account.headers(**extra)

    def create(self, key: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(
            "/v1/orders", json=body or {}, headers=self.headers(Idempotency_Key=key)
        )

    def confirm(
        self, order_id: str, version: int | str | None, total: int | None
    ) -> httpx.Response:
        headers = self.headers() if version is None else self.headers(If_Match=f'"{version}"')
        body = {} if total is None else {"totalCents": total}
        return self.http.patch(f"/v1/orders/{order_id}/confirm", json=body, headers=headers)

    def close(self, order_id: str, version: int | None = None) -> httpx.Response:
        headers = self.headers() if version is None else self.headers(If_Match=f'"{version}"')
        return self.http.post(f"/v1/orders/{order_id}/close", headers=headers)

    def get(self, order_id: str) -> httpx.Response:
        return self.http.get(f"/v1/orders/{order_id}", headers=self.headers())

    def list(self, **params: Any) -> httpx.Response:
        return self.http.get("/v1/orders", params=params, headers=self.headers())

    def draft(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.create(uuid.uuid4().hex, body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@pytest.fixture(scope="session")
def http(platform: State) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.rest_url, timeout=10) as client:
        yield client


@pytest.fixture
def api(http: httpx.Client, tenant: str) -> Api:
    return Api.of_new_customer(http, tenant)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the platform's JSON error with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    assert "details" in body
    return body


# Through the edge, rows and keys are asserted where the platform keeps them: its own
# database and Redis database (tests/conftest.py `platform`), not the session's.
@pytest.fixture
async def engine(platform: State) -> AsyncIterator[AsyncEngine]:
    """A connection pool to the platform's database, for asserting on rows."""
    created = db.create_engine(platform.database_url, pool_size=2)
    yield created
    await created.dispose()


@pytest.fixture
def redis_client(platform: State) -> Iterator[redis.Redis]:
    """A client of the platform's Redis database, for asserting on streams and keys."""
    client = redis.Redis.from_url(platform.redis_url)
    yield client
    client.close()
