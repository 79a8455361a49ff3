"""Adapters for the ERP and the Warehouse: HTTP through the kit's resilient
client in, domain objects out, each upstream's error answers translated.

Every write carries an Idempotency-Key to the ERP (the client's, or one per
call), so a retried write is applied once and writes can be retried safely.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.kit import errors
from services.kit.upstream import Response, Upstream
from services.product.domain import (
    Product,
    ProductDraft,
    ProductNotFound,
    StaleProductVersion,
    Stock,
)

log = logging.getLogger("shop.product.upstreams")


def _malformed(upstream: str, exc: Exception) -> errors.Unavailable:
    log.warning("malformed upstream answer", extra={"upstream": upstream, "error": repr(exc)})
    return errors.Unavailable(f"{upstream} sent an answer the gateway cannot read")


def _time(raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise TypeError(f"timestamp expected, got {raw!r}")
    return datetime.fromisoformat(raw)


def _int(raw: Any) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise TypeError(f"integer expected, got {raw!r}")
    return raw


def _str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError(f"string expected, got {raw!r}")
    return raw


def _product(raw: Any) -> Product:
    return Product(
        id=_str(raw["id"]),
        sku=_str(raw["sku"]),
        name=_str(raw["name"]),
        description=_str(raw["description"]),
        price_cents=_int(raw["price_cents"]),
        version=_int(raw["version"]),
        deleted=bool(raw["deleted"]),
        created_at=_time(raw["created_at"]),
        updated_at=_time(raw["updated_at"]),
    )


def _stock(raw: Any) -> Stock:
    updated = raw["updated_at"]
    return Stock(
        sku=_str(raw["sku"]),
        on_hand=_int(raw["on_hand"]),
        reserved=_int(raw["reserved"]),
        available=_int(raw["available"]),
        updated_at=None if updated is None else _time(updated),
    )


def _error(response: Response, field: str) -> str:
    """A field of the upstream's `{"error": {"code", "message"}}` body, or ''."""
    try:
        return str(response.json()["error"][field])
    except (ValueError, KeyError, TypeError):
        return ""


@dataclass(frozen=True)
class ErpPage:
    products: list[Product]
    has_more: bool


@dataclass(frozen=True)
class Saved:
    product: Product
    created: bool


class Erp:
    """The ERP's product API."""

    def __init__(self, upstream: Upstream) -> None:
        self._up = upstream

    async def page(self, tenant: str, after: str | None, limit: int) -> ErpPage:
        params = {"limit": str(limit), **({"after": after} if after else {})}
        response = await self._up.request(
            "GET", "/products", params=params, headers={"x-tenant-id": tenant}
        )
        body = self._json(response, None)
        try:
            return ErpPage([_product(p) for p in body["items"]], bool(body["has_more"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(self._up.name, exc) from exc

    async def get(self, tenant: str, product_id: str) -> Product:
        response = await self._up.request(
            "GET", f"/products/{product_id}", headers={"x-tenant-id": tenant}
        )
        return self._product(response, product_id)

    async def upsert(self, tenant: str, draft: ProductDraft, key: str | None) -> Saved:
        assert draft.sku is not None, "an upsert names its SKU"
        response = await self._up.request(
            "POST",
            "/products",
            json={
                "sku": draft.sku,
                "name": draft.name,
                "description": draft.description,
                "price_cents": draft.price_cents,
            },
            headers=self._write_headers(tenant, key),
            idempotent=True,
        )
        return Saved(self._product(response, draft.sku), created=response.status_code == 201)

    async def replace(
        self, tenant: str, product_id: str, draft: ProductDraft, version: int, key: str | None
    ) -> Product:
        response = await self._up.request(
            "PUT",
            f"/products/{product_id}",
            json={
                "name": draft.name,
                "description": draft.description,
                "price_cents": draft.price_cents,
            },
            headers={**self._write_headers(tenant, key), "if-match": f'"{version}"'},
        )
        return await self._versioned(response, tenant, product_id, version)

    async def delete(self, tenant: str, product_id: str, version: int, key: str | None) -> Product:
        response = await self._up.request(
            "DELETE",
            f"/products/{product_id}",
            headers={**self._write_headers(tenant, key), "if-match": f'"{version}"'},
        )
        return await self._versioned(response, tenant, product_id, version)

    async def _versioned(
        self, response: Response, tenant: str, product_id: str, version: int
    ) -> Product:
        """The product a conditional write returned; on a stale version, the conflict
        names the version the ERP holds now (its 412 does not say: one read asks)."""
        try:
            return self._product(response, product_id, version)
        except StaleProductVersion:
            try:
                current: int | None = (await self.get(tenant, product_id)).version
            except errors.PlatformError:
                current = None  # the conflict stands; only the hint is missing
            raise StaleProductVersion(version, current) from None

    @staticmethod
    def _write_headers(tenant: str, key: str | None) -> dict[str, str]:
        # Without a client key, one per call still makes this call's retries safe.
        return {"x-tenant-id": tenant, "idempotency-key": key or f"gw-{uuid.uuid4()}"}

    def _json(self, response: Response, product_id: str | None, version: int = 0) -> Any:
        status = response.status_code
        if status == 404 and product_id is not None:
            raise ProductNotFound(product_id)
        if status == 412:
            raise StaleProductVersion(version)
        if status == 422 and _error(response, "code") == "idempotency_mismatch":
            raise errors.IdempotencyKeyReused(
                "Idempotency-Key was already used with a different request"
            )
        if status == 400:
            raise errors.InvalidArgument(
                f"the ERP refused the product: {_error(response, 'message')}"
            )
        if not 200 <= status < 300:
            log.error(
                "unexpected ERP answer", extra={"status": status, "body": response.text[:500]}
            )
            raise errors.PlatformError(f"the ERP answered {status}")
        try:
            return response.json()
        except ValueError as exc:
            raise _malformed(self._up.name, exc) from exc

    def _product(self, response: Response, product_id: str, version: int = 0) -> Product:
        body = self._json(response, product_id, version)
        try:
            return _product(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(self._up.name, exc) from exc


class Warehouse:
    """The Warehouse's stock API."""

    def __init__(self, upstream: Upstream) -> None:
        self._up = upstream

    async def stock(self, tenant: str, skus: Sequence[str]) -> dict[str, Stock]:
        """Stock for each SKU (at most 200), keyed by SKU."""
        if not skus:
            return {}
        response = await self._up.request(
            "GET", "/stock", params=[("sku", s) for s in skus], headers={"x-tenant-id": tenant}
        )
        if response.status_code != 200:
            log.error("unexpected Warehouse answer", extra={"status": response.status_code})
            raise errors.PlatformError(f"the Warehouse answered {response.status_code}")
        try:
            items = [_stock(raw) for raw in response.json()["items"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(self._up.name, exc) from exc
        found = {s.sku: s for s in items}
        if set(skus) - found.keys():
            raise _malformed(self._up.name, KeyError(sorted(set(skus) - found.keys())))
        return found
