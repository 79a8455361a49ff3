"""Key rotation: while two signing keys are configured, the edge accepts tokens of both.

A user service of this module runs with keys [A, B]: A signs, both are
published in the JWKS that a second Envoy fetches. A token signed with B
(the key that signs next, or the one that signed before) passes the edge;
a token of an unpublished key does not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.launcher.platform import State
from services.user.tokens import generate_key
from tests import identity
from tests.e2e.conftest import assert_error
from tests.edges import Edge, running_edge, running_service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def keys(platform: State) -> dict[str, tuple[str, Path]]:
    """Three key files by name, each with its kid: A and B configured, C never published."""
    directory = Path(platform.run_dir) / "rotation-keys"
    made = {}
    for name in "ABC":
        path = directory / f"{name}.pem"
        made[name] = (generate_key(path), path)
    return made


@pytest.fixture(scope="module")
def edge(platform: State, keys: dict[str, tuple[str, Path]]) -> Iterator[Edge]:
    run_dir = Path(platform.run_dir) / "rotation"
    env = {
        "DATABASE_URL": platform.database_url,
        "REDIS_URL": platform.redis_url,
        "CURSOR_SECRET": uuid.uuid4().hex,
        "JWT_SIGNING_KEYS": f"{keys['A'][1]},{keys['B'][1]}",
    }
    with (
        running_service("user", run_dir, env, platform) as user,
        running_edge(platform, run_dir / "edge", user=user) as started,
    ):
        yield started


def _sign(path: Path, kid: str, account: identity.Account) -> str:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    now = int(time.time())
    claims = {
        "iss": "shop-platform", "aud": "shop-api", "sub": account.id, "tenant": account.tenant,
        "role": account.role, "iat": now, "exp": now + 300,
    }  # fmt: skip
    return jwt.encode(claims, key, "EdDSA", headers={"kid": kid})


def test_both_configured_keys_verify_and_the_first_one_signs(
    edge: Edge, tenant: str, keys: dict[str, tuple[str, Path]]
) -> None:
    with httpx.Client(base_url=edge.rest_url, timeout=10) as http:
        published = {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
        assert published == {keys["A"][0], keys["B"][0]}

        account = identity.customer(http, tenant)
        assert jwt.get_unverified_header(account.token)["kid"] == keys["A"][0]
        for name in "AB":
            kid, path = keys[name]
            bearer = {"Authorization": f"Bearer {_sign(path, kid, account)}"}
            assert http.get("/v1/users/me", headers=bearer).status_code == 200, name

        kid, path = keys["C"]
        refused = http.get(
            "/v1/users/me", headers={"Authorization": f"Bearer {_sign(path, kid, account)}"}
        )
        assert_error(refused, 401, "unauthenticated")
