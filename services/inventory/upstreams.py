"""The ERP and Warehouse as the inventory's sync reads them, over the kit's resilient client.

The ledger is keyed by product id, the Warehouse by SKU: the ERP's catalogue
pages (`GET /products`, live products by SKU) give each product's SKU, and
`GET /stock?sku=...` (up to 200 at a time) the warehouse's units of those SKUs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.kit import errors
from services.kit.upstream import Upstream

PAGE = 200


@dataclass(frozen=True)
class Catalogued:
    product_id: uuid.UUID
    sku: str


def _malformed(name: str, exc: Exception) -> errors.Unavailable:
    return errors.Unavailable(f"{name} answered a malformed document ({type(exc).__name__})")


def _body(upstream: Upstream, response: Any) -> Any:
    if response.status_code != 200:
        raise errors.Unavailable(f"{upstream.name} answered {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise _malformed(upstream.name, exc) from exc


class Catalogue:
    """Every live product of a tenant from the ERP, page by page."""

    def __init__(self, upstream: Upstream) -> None:
        self._up = upstream

    async def products(self, tenant: str) -> list[Catalogued]:
        found: list[Catalogued] = []
        after: str | None = None
        while True:
            params = {"limit": str(PAGE), **({"after": after} if after else {})}
            response = await self._up.request(
                "GET", "/products", params=params, headers={"x-tenant-id": tenant}
            )
            body = _body(self._up, response)
            try:
                page = [Catalogued(uuid.UUID(str(p["id"])), str(p["sku"])) for p in body["items"]]
                more = bool(body["has_more"])
            except (KeyError, TypeError, ValueError) as exc:
                raise _malformed(self._up.name, exc) from exc
            found.extend(page)
            if not more or not page:
                return found
            after = page[-1].sku


class Warehouse:
    """Units the warehouse can sell per SKU (its `available`: on hand less its own holds)."""

    def __init__(self, upstream: Upstream) -> None:
        self._up = upstream

    async def available(self, tenant: str, skus: Sequence[str]) -> dict[str, int]:
        levels: dict[str, int] = {}
        for start in range(0, len(skus), PAGE):
            chunk = skus[start : start + PAGE]
            response = await self._up.request(
                "GET", "/stock", params=[("sku", s) for s in chunk], headers={"x-tenant-id": tenant}
            )
            body = _body(self._up, response)
            try:
                for item in body["items"]:
                    levels[str(item["sku"])] = max(int(item["available"]), 0)
            except (KeyError, TypeError, ValueError) as exc:
                raise _malformed(self._up.name, exc) from exc
        return levels
