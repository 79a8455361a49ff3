"""A tuned single-process FastAPI app doing the work of the platform's cached,
authenticated `GET /v1/products?limit=20`: the benchmark's peer, not part of the
platform.

    PYTHONPATH=.:gen .venv/bin/python -m bench.peers.products_api --port P \
        --redis-url URL --jwks-url URL --erp-url URL --warehouse-url URL

Per request, the same checks as the platform's edge and product gateway:
- the Bearer token's EdDSA signature against the user service's JWKS, its
  issuer, audience and expiry (a verified token is cached until it expires, as
  Envoy's jwt_cache does; its expiry is checked on every use);
- the role claim is one the platform knows (RBAC: the list is no admin method);
- a per-route token bucket in the process (Envoy's local_ratelimit);
- per-user and per-address fixed windows in Redis, INCRBY and EXPIRE for each,
  in one pipelined round trip (the rate-limit service's keys and semantics);
- the tenant from the token, refused when X-Tenant-Id names another (403);
- the page of 20 products merged from the ERP (cached 30 s) and the Warehouse's
  stock (cached 2 s), with a signed next-page cursor, as JSON (orjson).

uvicorn with uvloop and httptools, no access log. It prints `ready <port>` once
the JWKS is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from redis.asyncio import BlockingConnectionPool, Redis

LIMIT = 20
ROLES = frozenset({"customer", "admin"})
JSON = "application/json"


def _error(status: int, code: str, message: str) -> Response:
    body = orjson.dumps({"code": code, "message": message})
    return Response(body, status_code=status, media_type=JSON)


class TokenVerifier:
    """EdDSA tokens against a JWKS, each verified once and then cached until it expires."""

    def __init__(self, jwks_url: str, issuer: str, audience: str, refresh_s: float = 300) -> None:
        self._url, self._issuer, self._audience = jwks_url, issuer, audience
        self._refresh_s = refresh_s
        self._keys: dict[str, Any] = {}
        self._fetched = 0.0
        self._cache: dict[str, dict[str, Any]] = {}

    async def load(self) -> None:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            document = (await client.get(self._url)).raise_for_status().json()
        self._keys = {k["kid"]: jwt.PyJWK(k).key for k in document["keys"]}
        self._fetched = time.monotonic()

    async def claims(self, token: str) -> dict[str, Any] | None:
        """The token's verified claims, or None."""
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            return cached if cached["exp"] + 30 > now else None
        if time.monotonic() - self._fetched > self._refresh_s:
            await self.load()
        try:
            kid = str(jwt.get_unverified_header(token).get("kid"))
            claims: dict[str, Any] = jwt.decode(
                token,
                self._keys[kid],
                algorithms=["EdDSA"],
                issuer=self._issuer,
                audience=self._audience,
                leeway=30,
                options={"require": ["exp", "sub", "tenant"]},
            )
        except (jwt.PyJWTError, KeyError):
            return None
        if len(self._cache) >= 10000:
            self._cache.clear()
        self._cache[token] = claims
        return claims


class TokenBucket:
    """A continuous token bucket, like Envoy's local_ratelimit on a route."""

    def __init__(self, rate: float) -> None:
        self._rate, self._tokens, self._at = rate, rate, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class Windows:
    """Fixed one-second windows per user and per address, counted in Redis in one round trip."""

    def __init__(self, redis: Redis, limit: int) -> None:
        self._redis, self._limit = redis, limit

    async def over(self, user: str, address: str) -> bool:
        window = int(time.time())
        pipe = self._redis.pipeline(transaction=False)
        for key in (f"rl:peer:user={user}:{window}", f"rl:peer:remote_address={address}:{window}"):
            pipe.incrby(key, 1)
            pipe.expire(key, 2)
        replies = await pipe.execute()
        return max(int(count) for count in replies[0::2]) > self._limit


@dataclass
class _Entry:
    value: Any
    loaded_at: float


class Ttl:
    """A read-through cache with a fixed TTL and one load at a time per key."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._entries: dict[Any, _Entry] = {}
        self._locks: dict[Any, asyncio.Lock] = {}

    async def get(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry.loaded_at < self._ttl:
            return entry.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry.loaded_at >= self._ttl:
                entry = _Entry(await load(), time.monotonic())
                self._entries[key] = entry
        return entry.value


class Catalogue:
    """The ERP's page and the Warehouse's stock, cached as the product gateway caches them."""

    def __init__(self, erp: httpx.AsyncClient, warehouse: httpx.AsyncClient, secret: bytes):
        self._erp, self._warehouse, self._secret = erp, warehouse, secret
        self._pages, self._stock = Ttl(30.0), Ttl(2.0)

    async def page(self, tenant: str) -> dict[str, Any]:
        page = await self._pages.get(tenant, lambda: self._erp_page(tenant))
        skus = tuple(p["sku"] for p in page["items"])
        stock = await self._stock.get((tenant, skus), lambda: self._stock_of(tenant, skus))
        body: dict[str, Any] = {
            "items": [
                {"id": p["id"], "sku": p["sku"], "name": p["name"],
                 "description": p["description"], "priceCents": p["price_cents"],
                 "version": p["version"], "stock": stock[p["sku"]]}
                for p in page["items"]
            ]
        }  # fmt: skip
        if page["has_more"] and page["items"]:
            body["nextCursor"] = self._cursor(f"products:{tenant}", page["items"][-1]["sku"])
        return body

    def _cursor(self, scope: str, sku: str) -> str:
        position = json.dumps({"sku": sku}, separators=(",", ":")).encode()
        mac = hmac.new(self._secret, scope.encode() + b"\0" + position, hashlib.sha256).digest()
        encode = base64.urlsafe_b64encode
        return f"{encode(position).rstrip(b'=').decode()}.{encode(mac[:16]).rstrip(b'=').decode()}"

    async def _erp_page(self, tenant: str) -> dict[str, Any]:
        response = await self._erp.get(
            "/products", params={"limit": str(LIMIT)}, headers={"x-tenant-id": tenant}
        )
        body: dict[str, Any] = response.raise_for_status().json()
        body["items"] = [p for p in body["items"] if not p["deleted"]]
        return body

    async def _stock_of(self, tenant: str, skus: tuple[str, ...]) -> dict[str, int]:
        response = await self._warehouse.get(
            "/stock", params=[("sku", s) for s in skus], headers={"x-tenant-id": tenant}
        )
        return {s["sku"]: s["available"] for s in response.raise_for_status().json()["items"]}


def build(args: argparse.Namespace) -> tuple[FastAPI, TokenVerifier]:
    verifier = TokenVerifier(args.jwks_url, args.issuer, args.audience)
    bucket = TokenBucket(args.route_rps)
    # A bounded pool that makes a burst wait for a connection, as the platform's clients do.
    pool = BlockingConnectionPool.from_url(args.redis_url, max_connections=256, timeout=5)
    windows = Windows(Redis(connection_pool=pool), args.window_limit)
    catalogue = Catalogue(
        httpx.AsyncClient(base_url=args.erp_url, timeout=3, trust_env=False),
        httpx.AsyncClient(base_url=args.warehouse_url, timeout=3, trust_env=False),
        hashlib.sha256(b"peer cursor secret").digest(),
    )
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/products")
    async def list_products(request: Request, limit: int = LIMIT) -> Response:
        if limit != LIMIT:
            return _error(400, "invalid_argument", "this peer serves limit=20 only")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        claims = await verifier.claims(token) if scheme.lower() == "bearer" else None
        if claims is None:
            return _error(401, "unauthenticated", "a valid access token is required")
        if claims.get("role") not in ROLES:
            return _error(403, "permission_denied", "unknown role")
        if not bucket.take():
            return _error(429, "resource_exhausted", "route limit")
        address = request.client.host if request.client else ""
        if await windows.over(claims["sub"], address):
            return _error(429, "resource_exhausted", "too many requests")
        tenant = claims["tenant"]
        requested = request.headers.get("x-tenant-id", "").strip()
        if requested and requested != tenant:
            return _error(403, "permission_denied", "X-Tenant-Id does not match the token")
        return Response(orjson.dumps(await catalogue.page(tenant)), media_type=JSON)

    return app, verifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--erp-url", required=True)
    parser.add_argument("--warehouse-url", required=True)
    parser.add_argument("--issuer", default="shop-platform")
    parser.add_argument("--audience", default="shop-api")
    parser.add_argument("--route-rps", type=float, default=1_000_000)
    parser.add_argument("--window-limit", type=int, default=1_000_000)
    args = parser.parse_args()
    app, verifier = build(args)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
        access_log=False, log_level="warning", lifespan="off",
    )  # fmt: skip
    server = uvicorn.Server(config)

    async def serve() -> None:
        await verifier.load()
        print(f"ready {args.port}", flush=True)
        await server.serve()

    import uvloop

    uvloop.run(serve())


if __name__ == "__main__":
    main()
