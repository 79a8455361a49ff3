"""The fake ERP: the authoritative product catalogue of each tenant, over HTTP.

    GET    /products?limit=&after=   live products by sku ascending: {"items": [...], "has_more"}
    GET    /products/{id}            one product, a soft-deleted one too ("deleted": true)
    POST   /products                 upsert by sku: 201 new (version 1), 200 replaced (version + 1)
    PUT    /products/{id}            replace name, description, price; If-Match required
    DELETE /products/{id}            soft delete; If-Match required

Single products carry `ETag: "<version>"`. Writes honour `Idempotency-Key`: the
first answer below 500 is replayed for the same method, path and body (with
`Idempotent-Replayed: true`); the key reused for anything else is 422.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from stubs import (
    Handler,
    UpstreamError,
    bad_request,
    format_ts,
    int_field,
    only_fields,
    parse_object,
    parse_ts,
    read_seed,
    sku_of,
    str_field,
    tenant_of,
    utc_now,
)
from stubs.faults import FaultInjector, application

# The forms clients send: "3" (the ETag as given), 3, and the weak W/"3".
_IF_MATCH = re.compile(r'(?:W/)?"(\d{1,10})"|(\d{1,10})')
_WRITE_FIELDS = ("sku", "name", "description", "price_cents")
_REPLAYED_HEADERS = ("Content-Type", "ETag", "Location")


@dataclass(frozen=True)
class Draft:
    """The fields a write sets on a product."""

    name: str
    description: str
    price_cents: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Draft:
        return cls(
            name=str_field(body, "name", low=1, high=200),
            description=str_field(body, "description", low=0, high=2000, default=""),
            price_cents=int_field(body, "price_cents"),
        )


@dataclass(frozen=True)
class Product:
    """A product as the ERP holds it; `version` counts its changes."""

    id: str
    sku: str
    name: str
    description: str
    price_cents: int
    version: int
    deleted: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Product:
        """A product of a seed file, validated like a request."""
        only_fields(data, [f.name for f in fields(cls)])
        product_id = str(data.get("id"))
        if str(uuid.UUID(product_id)) != product_id or uuid.UUID(product_id).version != 4:
            raise bad_request(f"id must be a lowercase uuid4, got {product_id!r}")
        if not isinstance(data.get("deleted"), bool):
            raise bad_request("deleted must be true or false")
        return cls(
            id=product_id,
            sku=sku_of(data.get("sku")),
            **asdict(Draft.from_json(data)),
            version=int_field(data, "version", low=1),
            deleted=data["deleted"],
            created_at=parse_ts(data.get("created_at")),
            updated_at=parse_ts(data.get("updated_at")),
        )

    def changed(self, now: datetime, **changes: Any) -> Product:
        return replace(self, **changes, version=self.version + 1, updated_at=now)

    def to_json(self) -> dict[str, Any]:
        moments = {
            "created_at": format_ts(self.created_at),
            "updated_at": format_ts(self.updated_at),
        }
        return {**asdict(self), **moments}


class Catalog:
    """Every tenant's products. No method awaits, so each change is atomic on the event loop."""

    def __init__(self) -> None:
        self._by_sku: dict[str, dict[str, Product]] = {}  # tenant -> sku -> product
        self._sku_of: dict[tuple[str, str], str] = {}  # (tenant, id) -> sku, which never changes

    def add(self, tenant: str, product: Product) -> None:
        """Add a seeded product; ValueError when its id or sku is taken."""
        if (tenant, product.id) in self._sku_of or product.sku in self._by_sku.get(tenant, {}):
            raise ValueError(f"tenant {tenant}: id {product.id} or sku {product.sku} is taken")
        self._put(tenant, product)

    def _put(self, tenant: str, product: Product) -> Product:
        self._by_sku.setdefault(tenant, {})[product.sku] = product
        self._sku_of[tenant, product.id] = product.sku
        return product

    def page(self, tenant: str, after: str | None, limit: int) -> tuple[list[Product], bool]:
        """Up to `limit` live products with skus above `after`, and whether more follow."""
        by_sku = self._by_sku.get(tenant, {})
        live = (s for s, p in by_sku.items() if not p.deleted and (after is None or s > after))
        skus = heapq.nsmallest(limit + 1, live)
        return [by_sku[sku] for sku in skus[:limit]], len(skus) > limit

    def get(self, tenant: str, product_id: str) -> Product:
        sku = self._sku_of.get((tenant, product_id))
        if sku is None:
            raise UpstreamError(404, "not_found", f"product {product_id} not found")
        return self._by_sku[tenant][sku]

    def upsert(self, tenant: str, sku: str, draft: Draft, now: datetime) -> tuple[Product, bool]:
        """The product with this sku set to `draft` (restored if deleted), and whether it is new."""
        current = self._by_sku.get(tenant, {}).get(sku)
        if current is not None:
            return self._put(tenant, current.changed(now, **asdict(draft), deleted=False)), False
        new = Product(
            id=str(uuid.uuid4()),
            sku=sku,
            **asdict(draft),
            version=1,
            deleted=False,
            created_at=now,
            updated_at=now,
        )
        return self._put(tenant, new), True

    def change(
        self, tenant: str, product_id: str, if_match: int, now: datetime, **changes: Any
    ) -> Product:
        """Apply `changes` to a live product the caller saw at its current version."""
        current = self.get(tenant, product_id)
        if current.deleted:
            raise UpstreamError(404, "not_found", f"product {product_id} is deleted")
        if current.version != if_match:
            message = f"product is at version {current.version}, not {if_match}"
            raise UpstreamError(412, "version_mismatch", message)
        return self._put(tenant, current.changed(now, **changes))


@dataclass(frozen=True)
class _Answer:
    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str]


class IdempotencyCache:
    """First answers per (tenant, key); the oldest are forgotten beyond `capacity` (benchmarks)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._answers: OrderedDict[tuple[str, str], _Answer] = OrderedDict()

    def answer(
        self, tenant: str, key: str, fingerprint: str, run: Callable[[], web.Response]
    ) -> web.Response:
        """Replay the stored answer for the key, or run and store it; `run` must not await."""
        if not 0 < len(key) <= 255 or not key.isascii() or not key.isprintable():
            raise bad_request("Idempotency-Key must be 1-255 printable ASCII characters")
        stored = self._answers.get((tenant, key))
        if stored is not None:
            if stored.fingerprint != fingerprint:
                message = "Idempotency-Key was used for another request"
                raise UpstreamError(422, "idempotency_mismatch", message)
            headers = {**stored.headers, "Idempotent-Replayed": "true"}
            return web.Response(status=stored.status, body=stored.body, headers=headers)
        response = run()
        if response.status < 500 and isinstance(response.body, bytes):
            headers = {k: v for k, v in response.headers.items() if k in _REPLAYED_HEADERS}
            answer = _Answer(fingerprint, response.status, response.body, headers)
            self._answers[tenant, key] = answer
            if len(self._answers) > self._capacity:
                self._answers.popitem(last=False)
        return response


def _product_response(product: Product, status: int = 200) -> web.Response:
    response = web.json_response(product.to_json(), status=status)
    response.headers["ETag"] = f'"{product.version}"'
    if status == 201:
        response.headers["Location"] = f"/products/{product.id}"
    return response


def _if_match(request: web.Request) -> int:
    header = request.headers.get("If-Match")
    if header is None:
        raise UpstreamError(428, "precondition_required", 'If-Match: "<version>" is required')
    match = _IF_MATCH.fullmatch(header.strip())
    if match is None:
        raise bad_request(f'If-Match must be a version like "3", got {header!r}')
    return int(match.group(1) or match.group(2))


Write = Callable[[web.Request, str, bytes], web.Response]


class ErpApi:
    """The HTTP handlers over a Catalog; a write reads its body, then runs without awaiting."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.idempotency = IdempotencyCache()

    async def list_products(self, request: web.Request) -> web.Response:
        tenant, query = tenant_of(request), request.query
        if len(query.getall("limit", [])) > 1 or len(query.getall("after", [])) > 1:
            raise bad_request("limit and after may each be given once")
        limit = query.get("limit", "50")
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= 200:
            raise bad_request(f"limit must be an integer in 1..200, got {limit!r}")
        after = sku_of(query["after"]) if "after" in query else None
        items, has_more = self.catalog.page(tenant, after, int(limit))
        return web.json_response({"items": [p.to_json() for p in items], "has_more": has_more})

    async def get_product(self, request: web.Request) -> web.Response:
        return _product_response(self.catalog.get(tenant_of(request), request.match_info["id"]))

    def _upsert(self, request: web.Request, tenant: str, body: bytes) -> web.Response:
        data = parse_object(body)
        only_fields(data, _WRITE_FIELDS)
        sku, draft = sku_of(data.get("sku")), Draft.from_json(data)
        product, created = self.catalog.upsert(tenant, sku, draft, utc_now())
        return _product_response(product, 201 if created else 200)

    def _replace(self, request: web.Request, tenant: str, body: bytes) -> web.Response:
        product_id, version, data = request.match_info["id"], _if_match(request), parse_object(body)
        only_fields(data, _WRITE_FIELDS)
        draft = Draft.from_json(data)
        if "sku" in data and data["sku"] != self.catalog.get(tenant, product_id).sku:
            raise bad_request("sku cannot change")
        product = self.catalog.change(tenant, product_id, version, utc_now(), **asdict(draft))
        return _product_response(product)

    def _delete(self, request: web.Request, tenant: str, body: bytes) -> web.Response:
        product_id, version = request.match_info["id"], _if_match(request)
        product = self.catalog.change(tenant, product_id, version, utc_now(), deleted=True)
        return _product_response(product)

    def _writer(self, write: Write) -> Handler:
        """A handler that reads the body, then runs `write` under the Idempotency-Key, if any."""

        async def handle(request: web.Request) -> web.StreamResponse:
            tenant, body = tenant_of(request), await request.read()
            # Nothing below awaits: the key check, the change and storing its answer are one step.

            def answer() -> web.Response:
                try:
                    return write(request, tenant, body)
                except UpstreamError as exc:  # a refusal is an answer too, stored and replayed
                    return exc.response()

            key = request.headers.get("Idempotency-Key")
            if key is None:
                return answer()
            operation = f"{request.method} {request.path}".encode()
            fingerprint = hashlib.sha256(operation + b"\0" + body).hexdigest()
            return self.idempotency.answer(tenant, key, fingerprint, answer)

        return handle

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/products", self.list_products),
            web.post("/products", self._writer(self._upsert)),
            web.get("/products/{id}", self.get_product),
            web.put("/products/{id}", self._writer(self._replace)),
            web.delete("/products/{id}", self._writer(self._delete)),
        ]


def load_catalog(path: Path) -> Catalog:
    """The catalogue of a seed file: `{"tenants": {"<tenant>": [product, ...]}}`."""
    catalog = Catalog()
    for tenant, products in read_seed(path).items():
        for data in products:
            try:
                catalog.add(tenant, Product.from_json(data))
            except (UpstreamError, ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}: tenant {tenant}: {data!r}: {exc}") from exc
    return catalog


def create_app(data_dir: Path, injector: FaultInjector) -> web.Application:
    """The ERP app seeded from `<data_dir>/catalog.json`."""
    return application(ErpApi(load_catalog(data_dir / "catalog.json")).routes(), injector)
