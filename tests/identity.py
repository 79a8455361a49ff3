"""Accounts for tests: real users registered and logged in through the edge.

Customers register and log in over REST like any client. An admin is made
with the user service's admin command (its function, in this process: a
subprocess per test costs a second), then logs in over REST too. Every token
a test uses was issued by the platform.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import httpx

from services.launcher.platform import State
from services.user.admin import create_admin

PASSWORD = "correct horse battery staple"
# Still Argon2id, cheaper than production's 19 MiB x 2: tests make hundreds of users.
CHEAP_ARGON2 = {"ARGON2_MEMORY_KIB": "4096", "ARGON2_TIME_COST": "1"}


@dataclass(frozen=True)
class Account:
    """A logged-in user of one tenant."""

    id: str
    tenant: str
    email: str
    role: str
    token: str

    def headers(self, **extra: str) -> dict[str, str]:
        """The bearer token plus extra headers (Idempotency_Key -> Idempotency-Key)."""
        return {
            "Authorization": f"Bearer {self.token}",
            **{k.replace("_", "-"): v for k, v in extra.items()},
        }


def login(http: httpx.Client, tenant: str, email: str, password: str = PASSWORD) -> Account:
    """Log in over REST; the account with its access token."""
    response = http.post(
        "/v1/auth/login",
        json={"email": email, "password": password},
        headers={"X-Tenant-Id": tenant},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    user = body["user"]
    return Account(user["id"], tenant, email, user["role"], body["accessToken"])


def customer(http: httpx.Client, tenant: str, name: str | None = None) -> Account:
    """Register a new customer of `tenant` over REST and log in."""
    name = name or f"c-{uuid.uuid4().hex[:10]}"
    email = f"{name}@example.com"
    response = http.post(
        "/v1/users",
        json={"email": email, "username": name, "password": PASSWORD},
        headers={"X-Tenant-Id": tenant},
    )
    assert response.status_code == 201, response.text
    return login(http, tenant, email)


def admin(http: httpx.Client, platform: State, tenant: str) -> Account:
    """Make an admin of `tenant` with the user service's admin command, and log in."""
    name = f"a-{uuid.uuid4().hex[:10]}"
    env = {"DATABASE_URL": platform.database_url, **CHEAP_ARGON2}
    asyncio.run(create_admin(env, tenant, f"{name}@example.com", name, PASSWORD))
    return login(http, tenant, f"{name}@example.com")
