"""One person, one account, through the edge: spellings of an identifier, and login throttling.

Failures count against the account whichever identifier named it, and per
(account, client address): a guesser is stopped at their address, the owner
still gets in from theirs. The address is the TCP peer Envoy saw; loopback
addresses other than 127.0.0.1 stand in for a second client.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from services.launcher.platform import State
from tests import identity
from tests.e2e.conftest import assert_error
from tests.identity import PASSWORD

pytestmark = pytest.mark.e2e

WRONG = "not the password at all"


def _register(http: httpx.Client, tenant: str, email: str, username: str) -> httpx.Response:
    body = {"email": email, "username": username, "password": PASSWORD}
    return http.post("/v1/users", json=body, headers={"X-Tenant-Id": tenant})


def _login(http: httpx.Client, tenant: str, password: str, **who: str) -> httpx.Response:
    return http.post(
        "/v1/auth/login", json={**who, "password": password}, headers={"X-Tenant-Id": tenant}
    )


@pytest.fixture
def elsewhere(platform: State) -> Iterator[httpx.Client]:
    """A client connecting from another address (127.0.0.2) than the default one."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=platform.rest_url, transport=transport, timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    "copy",
    [
        "\uff52\uff45\uff4e\u00e9\uff20example.com",  # fullwidth letters and @
        "rene\u0301@example.com",  # the decomposed é
        "RENÉ@Example.COM",
    ],
)
def test_another_spelling_of_an_email_is_the_same_account(
    http: httpx.Client, tenant: str, copy: str
) -> None:
    assert _register(http, tenant, "rené@example.com", "rene").status_code == 201
    taken = assert_error(_register(http, tenant, copy, "rene2"), 409, "conflict")
    assert "email" in taken["message"]
    assert _login(http, tenant, PASSWORD, email=copy).status_code == 200


@pytest.mark.parametrize(
    "email",
    ["ann\u200b@example.com", "\ufeffann@example.com", "ann@example.com.", "ann@exam\u00adple.com"],
)
def test_invisible_characters_and_a_trailing_dot_are_refused(
    http: httpx.Client, tenant: str, email: str
) -> None:
    assert_error(_register(http, tenant, email, "ann"), 400, "invalid_argument")
    assert _register(http, tenant, "ann@example.com", "ann").status_code == 201


def test_a_fullwidth_username_logs_in_to_the_one_account(http: httpx.Client, tenant: str) -> None:
    made = _register(http, tenant, "ann@example.com", "ann").json()
    assert_error(_register(http, tenant, "other@example.com", "\uff41nn"), 409, "conflict")
    logged_in = _login(http, tenant, PASSWORD, username="\uff21\uff2e\uff2e")
    assert logged_in.json()["user"]["id"] == made["id"]


def test_guesses_by_email_and_by_username_share_one_count(http: httpx.Client, tenant: str) -> None:
    ann = identity.customer(http, tenant, f"ann-{uuid.uuid4().hex[:6]}")
    for _ in range(5):
        assert_error(_login(http, tenant, WRONG, email=ann.email), 401, "unauthenticated")
    # The sixth guess, by username this time, is refused before it is checked.
    refused = _login(http, tenant, PASSWORD, username=ann.email.split("@")[0])
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) > 0


def test_a_guesser_cannot_lock_the_owner_out(
    http: httpx.Client, elsewhere: httpx.Client, tenant: str
) -> None:
    ann = identity.customer(http, tenant)
    for n in range(5):
        # A forged X-Forwarded-For does not make the guesser someone else.
        forged = {"X-Tenant-Id": tenant, "X-Forwarded-For": f"198.51.100.{n}"}
        body = {"email": ann.email, "password": WRONG}
        assert http.post("/v1/auth/login", json=body, headers=forged).status_code == 401
    assert_error(_login(http, tenant, PASSWORD, email=ann.email), 429, "rate_limited")
    started = time.monotonic()
    owner = _login(elsewhere, tenant, PASSWORD, email=ann.email)
    assert owner.status_code == 200, owner.text
    assert owner.json()["user"]["id"] == ann.id
    # Slowed rather than blocked: the account's failures cost every attempt a pause.
    assert time.monotonic() - started >= 0.25


def test_password_change_guesses_count_like_login_guesses(
    http: httpx.Client, elsewhere: httpx.Client, tenant: str
) -> None:
    # A stolen token must not guess the password faster than the login form.
    ann = identity.customer(http, tenant)

    def change(current: str) -> httpx.Response:
        return http.put(
            f"/v1/users/{ann.id}",
            json={"password": "a brand new passphrase", "currentPassword": current},
            headers=ann.headers(If_Match='"1"'),
        )

    for _ in range(5):
        assert_error(change(WRONG), 400, "invalid_argument")
    assert_error(change(PASSWORD), 429, "rate_limited")
    assert_error(_login(http, tenant, PASSWORD, email=ann.email), 429, "rate_limited")
    # The owner, from their own address, still gets in.
    assert _login(elsewhere, tenant, PASSWORD, email=ann.email).status_code == 200
