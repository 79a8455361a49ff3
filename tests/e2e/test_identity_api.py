"""Users, tokens and the secure edge, end to end through Envoy.

Register, log in, read and change profiles (admin or self), admin routes
refused for customers at the edge, and every kind of forged or broken token
refused, whether it comes over REST or native gRPC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from services.launcher.platform import State
from tests import identity
from tests.e2e.conftest import assert_error
from tests.identity import PASSWORD, Account

pytestmark = pytest.mark.e2e


def _me(http: httpx.Client, headers: dict[str, str], path: str = "/v1/users/me") -> httpx.Response:
    return http.get(path, headers=headers)


# --- Register, login, profile ----------------------------------------------------------------


def test_register_login_and_profile_on_both_paths(http: httpx.Client, tenant: str) -> None:
    name = f"u{uuid.uuid4().hex[:8]}"
    registered = http.post(
        "/register",
        json={"email": f"{name}@Example.com", "username": name, "password": PASSWORD},
        headers={"X-Tenant-Id": tenant},
    )
    assert registered.status_code == 201, registered.text
    user = registered.json()
    assert "password" not in json.dumps(user).lower()
    assert (user["email"], user["role"], user["tenantId"]) == (
        f"{name}@example.com",
        "customer",
        tenant,
    )
    assert registered.headers["etag"] == '"1"'

    login = http.post(
        "/login", json={"username": name, "password": PASSWORD}, headers={"X-Tenant-Id": tenant}
    )
    assert login.status_code == 200, login.text
    assert login.headers["cache-control"] == "no-store"
    body = login.json()
    assert body["tokenType"] == "Bearer"
    assert 0 < body["expiresIn"] <= 3600
    bearer = {"Authorization": f"Bearer {body['accessToken']}"}
    for path in ("/profile", "/v1/users/me"):
        profile = _me(http, bearer, path)
        assert profile.status_code == 200, profile.text
        assert profile.json()["id"] == user["id"]


def test_the_token_verifies_with_the_published_jwks(http: httpx.Client, tenant: str) -> None:
    account = identity.customer(http, tenant)
    jwks = http.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert jwks.headers["content-type"].startswith("application/json")
    header = jwt.get_unverified_header(account.token)
    assert header["alg"] == "EdDSA"
    key = next(k for k in jwks.json()["keys"] if k["kid"] == header["kid"])
    assert "d" not in key, "the JWKS must hold public keys only"
    claims = jwt.decode(
        account.token, jwt.PyJWK(key).key, algorithms=["EdDSA"], audience="shop-api",
        issuer="shop-platform",
    )  # fmt: skip
    assert (claims["sub"], claims["tenant"], claims["role"]) == (account.id, tenant, "customer")
    assert claims["exp"] - claims["iat"] <= 3600


def test_duplicate_registration_and_bad_input_are_refused(http: httpx.Client, tenant: str) -> None:
    account = identity.customer(http, tenant, "dupe")
    again = http.post(
        "/v1/users",
        json={"email": "DUPE@example.com", "username": "dupe2", "password": PASSWORD},
        headers={"X-Tenant-Id": tenant},
    )
    assert_error(again, 409, "conflict")
    short = http.post(
        "/v1/users",
        json={"email": "x@example.com", "username": "xx1", "password": "short"},
        headers={"X-Tenant-Id": tenant},
    )
    assert_error(short, 400, "invalid_argument")
    no_tenant = http.post(
        "/v1/users", json={"email": "y@example.com", "username": "yy1", "password": PASSWORD}
    )
    assert "X-Tenant-Id" in assert_error(no_tenant, 400, "invalid_argument")["message"]
    # The same email is free in another tenant.
    assert identity.customer(http, f"{tenant}-b", "dupe").id != account.id


def test_unknown_user_and_wrong_password_get_the_same_answer(
    http: httpx.Client, tenant: str
) -> None:
    account = identity.customer(http, tenant)

    def attempt(email: str) -> httpx.Response:
        return http.post(
            "/v1/auth/login",
            json={"email": email, "password": "not the password at all"},
            headers={"X-Tenant-Id": tenant},
        )

    wrong, unknown = attempt(account.email), attempt("nobody@example.com")
    assert_error(wrong, 401, "unauthenticated")
    assert (wrong.status_code, wrong.json()) == (unknown.status_code, unknown.json())


def test_repeated_login_failures_are_rate_limited_per_user(http: httpx.Client, tenant: str) -> None:
    victim, bystander = identity.customer(http, tenant), identity.customer(http, tenant)
    for _ in range(5):
        http.post(
            "/v1/auth/login",
            json={"email": victim.email, "password": "guess guess guess"},
            headers={"X-Tenant-Id": tenant},
        )
    # Now even the right password waits: the throttle runs before the check.
    throttled = http.post(
        "/v1/auth/login",
        json={"email": victim.email, "password": PASSWORD},
        headers={"X-Tenant-Id": tenant},
    )
    assert_error(throttled, 429, "rate_limited")
    assert int(throttled.headers["retry-after"]) > 0
    assert identity.login(http, tenant, bystander.email).id == bystander.id


# --- Admin or self ---------------------------------------------------------------------------


def test_users_see_themselves_and_admins_see_everyone_in_their_tenant(
    platform: State, http: httpx.Client, tenant: str
) -> None:
    alice, bob = identity.customer(http, tenant), identity.customer(http, tenant)
    admin = identity.admin(http, platform, tenant)
    assert http.get(f"/v1/users/{alice.id}", headers=alice.headers()).status_code == 200
    assert_error(http.get(f"/v1/users/{bob.id}", headers=alice.headers()), 404, "not_found")
    seen = http.get(f"/v1/users/{bob.id}", headers=admin.headers())
    assert seen.status_code == 200
    assert seen.json()["email"] == bob.email
    # An admin of another tenant does not see them.
    stranger = identity.admin(http, platform, f"{tenant}-other")
    assert_error(http.get(f"/v1/users/{bob.id}", headers=stranger.headers()), 404, "not_found")


def test_updates_by_self_and_admin_and_the_role_rule(
    platform: State, http: httpx.Client, tenant: str
) -> None:
    alice = identity.customer(http, tenant)
    admin = identity.admin(http, platform, tenant)
    url = f"/v1/users/{alice.id}"

    renamed = http.put(
        url,
        json={"username": f"alice{uuid.uuid4().hex[:6]}"},
        headers=alice.headers(If_Match='"1"'),
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.headers["etag"] == '"2"'
    assert_error(http.put(url, json={"username": "zzz"}, headers=alice.headers()), 428,
                 "precondition_required")  # fmt: skip
    stale = http.put(url, json={"username": "zzz"}, headers=alice.headers(If_Match='"1"'))
    assert_error(stale, 409, "conflict")
    promote = http.put(url, json={"role": "admin"}, headers=alice.headers(If_Match='"2"'))
    assert_error(promote, 403, "permission_denied")

    promoted = http.put(url, json={"role": "admin"}, headers=admin.headers(If_Match='"2"'))
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "admin"
    # The role lives in the token: a new login carries it.
    assert identity.login(http, tenant, alice.email).role == "admin"


def test_an_admin_route_is_refused_for_a_customer_at_the_edge(
    platform: State, http: httpx.Client, tenant: str
) -> None:
    customer = identity.customer(http, tenant)
    admin = identity.admin(http, platform, tenant)
    refused = http.get("/v1/admin/users", headers=customer.headers())
    assert "rbac" in assert_error(refused, 403, "permission_denied")["details"][0]["reason"]
    listed = http.get("/v1/admin/users", params={"limit": 10}, headers=admin.headers())
    assert listed.status_code == 200, listed.text
    assert {u["id"] for u in listed.json()["items"]} == {customer.id, admin.id}

    write = http.post(
        "/v1/products",
        json={"sku": "NOPE-1", "name": "nope", "priceCents": 1},
        headers=customer.headers(Idempotency_Key=uuid.uuid4().hex),
    )
    assert "rbac" in assert_error(write, 403, "permission_denied")["details"][0]["reason"]


# --- Forged and broken tokens ----------------------------------------------------------------


def _claims(account: Account, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "shop-platform", "aud": "shop-api", "sub": account.id, "tenant": account.tenant,
        "role": account.role, "iat": now, "nbf": now, "exp": now + 300, "jti": uuid.uuid4().hex,
    }  # fmt: skip
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _platform_key(platform: State) -> ed25519.Ed25519PrivateKey:
    pem = (Path(platform.run_dir) / "keys" / "jwt-signing.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forgeries(platform: State, account: Account) -> dict[str, str]:
    """Tokens that must all be refused, by what is wrong with them."""
    real_key = _platform_key(platform)
    kid = jwt.get_unverified_header(account.token)["kid"]
    stranger = ed25519.Ed25519PrivateKey.generate()
    public_pem = real_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header, payload, signature = account.token.split(".")
    admin_payload = _b64(json.dumps(_claims(account, role="admin")).encode())

    def signed(key: ed25519.Ed25519PrivateKey, key_id: str = kid, **changes: Any) -> str:
        return jwt.encode(_claims(account, **changes), key, "EdDSA", headers={"kid": key_id})

    now = int(time.time())
    return {
        "bad signature": signed(stranger),
        "payload changed after signing": f"{header}.{admin_payload}.{signature}",
        "alg none": f"{_b64(json.dumps({'alg': 'none', 'kid': kid}).encode())}.{payload}.",
        "HS256 with the public key": _hs256(_claims(account), public_pem, kid),
        "expired": signed(real_key, iat=now - 7200, nbf=None, exp=now - 3600),
        "wrong issuer": signed(real_key, iss="evil"),
        "wrong audience": signed(real_key, aud="other-api"),
        "unknown kid": signed(stranger, "not-a-key"),
        "garbage": "not.a.token",
    }


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 over the public key bytes (pyjwt rightly refuses to do this itself)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def test_forged_and_broken_tokens_are_refused_over_rest(
    platform: State, http: httpx.Client, tenant: str
) -> None:
    account = identity.customer(http, tenant)
    assert _me(http, account.headers()).status_code == 200
    assert_error(_me(http, {}), 401, "unauthenticated")
    # Every invalid token is a 401 with `error="invalid_token"` (RFC 6750 3.1), an
    # authentic token issued for another API included.
    for what, token in _forgeries(platform, account).items():
        response = _me(http, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
        assert response.json()["code"] == "unauthenticated", what
        assert 'error="invalid_token"' in response.headers["www-authenticate"], what
        # A bad token on a public route is refused too, not silently ignored.
        public = http.get("/v1/products", headers={"Authorization": f"Bearer {token}"})
        assert public.status_code == 401, f"{what} on a public route: {public.status_code}"


def test_forged_tokens_are_refused_over_native_grpc(
    platform: State, http: httpx.Client, tenant: str
) -> None:
    account = identity.customer(http, tenant)
    with grpc.insecure_channel(platform.grpc_target) as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        request = order_pb2.ListOrdersRequest()
        orders.ListOrders(
            request, metadata=[("authorization", f"Bearer {account.token}")], timeout=5
        )
        with pytest.raises(grpc.RpcError) as missing:
            orders.ListOrders(request, metadata=[("x-tenant-id", tenant)], timeout=5)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for what, token in _forgeries(platform, account).items():
            with pytest.raises(grpc.RpcError) as refused:
                orders.ListOrders(
                    request, metadata=[("authorization", f"Bearer {token}")], timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, what
        # The admin rule holds for native gRPC too.
        with pytest.raises(grpc.RpcError) as denied:
            product_pb2_grpc.ProductServiceStub(channel).CreateProduct(
                product_pb2.CreateProductRequest(sku="GRPC-1", name="x", price_cents=1),
                metadata=[("authorization", f"Bearer {account.token}"), ("idempotency-key", "k")],
                timeout=5,
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_spoofed_identity_headers_change_nothing(
    platform: State, http: httpx.Client, tenant: str
) -> None:
    alice = identity.customer(http, tenant)
    admin = identity.admin(http, platform, tenant)
    # A spoofed user header: the token's user wins.
    spoofed = _me(http, alice.headers(X_User_Id=admin.id, X_User_Role="admin"))
    assert spoofed.json()["id"] == alice.id
    assert_error(http.get("/v1/admin/users", headers=alice.headers(X_User_Role="admin")), 403,
                 "permission_denied")  # fmt: skip
    # Without a token, identity headers buy nothing.
    anonymous = {"X-User-Id": admin.id, "X-User-Role": "admin", "X-Tenant-Id": tenant}
    assert_error(_me(http, anonymous), 401, "unauthenticated")
    assert_error(http.get("/v1/admin/users", headers=anonymous), 401, "unauthenticated")
    # A spoofed tenant header that disagrees with the token is refused.
    other = http.get("/v1/orders", headers=alice.headers(X_Tenant_Id=f"{tenant}-other"))
    assert_error(other, 403, "permission_denied")
    same = http.get("/v1/orders", headers=alice.headers(X_Tenant_Id=tenant))
    assert same.status_code == 200
