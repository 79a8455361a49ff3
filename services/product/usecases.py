"""Product use cases: merged reads through the caches, idempotent writes to the ERP.

Reads take the ERP's data and the Warehouse's stock from two TTL caches
(single-flight, stale-if-error). A write claims its idempotency key in
PostgreSQL, calls the ERP inside that transaction and stores the answer with
the key: a duplicate waits on the key's row and replays the answer; an ERP
failure rolls the claim back so the client can retry. Writes invalidate the
tenant's cached products.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import context, errors
from services.kit.cache import TtlCache
from services.kit.cursor import CursorCodec, page_size
from services.kit.idempotency import IdempotencyStore, KeyScope
from services.kit.uow import Claim, Stored, UnitOfWork
from services.product.domain import Product, ProductDraft, ProductNotFound, ProductView, Stock
from services.product.upstreams import Erp, ErpPage, Saved, Warehouse

DEFAULT_PAGE = 20
MAX_PAGE = 100
# Upstream failures that a stale cached copy may stand in for.
UPSTREAM_FAILURES = (errors.Unavailable, errors.DeadlineExceeded)

ProductKey = tuple[str, str, str, int]  # (kind, tenant, id or after-sku, limit)
PageKey = tuple[str, str, int, bool]  # (tenant, after-sku, limit, need_stock)
StockKey = tuple[str, tuple[str, ...]]  # (tenant, skus)

# What a write stores with its key, to replay: the product, and for a create
# whether it was new.
STORED_SAVE = Stored(
    lambda saved: {"product": saved.product.to_json(), "created": saved.created},
    lambda stored: Saved(Product.from_json(stored["product"]), stored["created"]),
)
STORED_PRODUCT = Stored(
    lambda product: {"product": product.to_json()},
    lambda stored: Product.from_json(stored["product"]),
)


@dataclass(frozen=True)
class Freshness:
    """How a read was served: all from cache, and whether any part was stale."""

    hit: bool
    stale: bool

    def __and__(self, other: Freshness) -> Freshness:
        return Freshness(self.hit and other.hit, self.stale or other.stale)


@dataclass(frozen=True)
class Page:
    """One page of merged products. Reads of a page built from the same cached
    entries get the same object back, so its wire form can be kept with it."""

    views: list[ProductView]
    next_cursor: str | None
    freshness: Freshness


@dataclass(frozen=True)
class Read:
    view: ProductView
    freshness: Freshness


@dataclass(frozen=True)
class Written:
    product: Product
    created: bool
    replayed: bool


@dataclass(frozen=True)
class Budgets:
    """Seconds a whole read or write may take, all upstream calls included."""

    read_s: float = 3.0
    write_s: float = 5.0


T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


async def _read_through(
    cache: TtlCache[K, T], key: K, load: Callable[[], Awaitable[T]]
) -> tuple[T, Freshness]:
    """The cached value and how it was served: a hit unless this call loaded it
    (callers that joined another's load count as hits, RFC 9211 "collapsed")."""
    loaded = False

    async def counted() -> T:
        nonlocal loaded
        loaded = True
        return await load()

    cached = await cache.get(key, counted, stale_on=UPSTREAM_FAILURES)
    return cached.value, Freshness(hit=not loaded, stale=cached.stale)


class Catalog:
    """The product gateway's use cases for one ERP and one Warehouse."""

    def __init__(
        self,
        *,
        erp: Erp,
        warehouse: Warehouse,
        engine: AsyncEngine,
        idempotency: IdempotencyStore,
        cursors: CursorCodec,
        products: TtlCache[ProductKey, Any],
        stock: TtlCache[StockKey, dict[str, Stock]],
        budgets: Budgets,
        max_pages: int = 1000,
    ) -> None:
        self._erp, self._warehouse = erp, warehouse
        self._engine, self._idempotency, self._cursors = engine, idempotency, cursors
        self._products, self._stock = products, stock
        self._budgets = budgets
        # The pages built from the cached entries, by request: a page built from the
        # very same cached ERP page and stock entries is the same page.
        self._pages: OrderedDict[PageKey, tuple[ErpPage, object, Page]] = OrderedDict()
        self._max_pages = max_pages

    # Reads ----------------------------------------------------------------

    async def page(self, tenant: str, limit: int, cursor: str, *, need_stock: bool) -> Page:
        """One page of live products by SKU; the cursor is bound to the tenant."""
        limit = page_size(limit, DEFAULT_PAGE, MAX_PAGE)
        scope = f"products:{tenant}"
        after = self._cursors.decode(scope, cursor).get("sku", "") if cursor else ""
        with context.budget(self._budgets.read_s):
            erp_page: ErpPage
            erp_page, erp_freshness = await _read_through(
                self._products,
                ("page", tenant, after, limit),
                lambda: self._erp.page(tenant, after or None, limit),
            )
            stock, stock_freshness = await self._stock_for(
                tenant, [p.sku for p in erp_page.products], need_stock
            )
        freshness = erp_freshness & stock_freshness
        key = (tenant, after, limit, need_stock)
        built = self._pages.get(key)
        same = built is not None and built[0] is erp_page and built[1] is stock
        if built is not None and same and built[2].freshness == freshness:
            return built[2]
        views = [
            ProductView(p, stock.get(p.sku) if stock is not None else None, freshness.stale)
            for p in erp_page.products
        ]
        next_cursor = None
        if erp_page.has_more and erp_page.products:
            next_cursor = self._cursors.encode(scope, {"sku": erp_page.products[-1].sku})
        page = Page(views, next_cursor, freshness)
        self._pages[key] = (erp_page, stock, page)
        self._pages.move_to_end(key)
        while len(self._pages) > self._max_pages:
            self._pages.popitem(last=False)
        return page

    async def get(self, tenant: str, product_id: str, *, need_stock: bool) -> Read:
        """One live product merged with its stock."""
        with context.budget(self._budgets.read_s):
            product: Product
            product, erp_freshness = await _read_through(
                self._products,
                ("item", tenant, product_id, 0),
                lambda: self._erp.get(tenant, product_id),
            )
            if product.deleted:
                raise ProductNotFound(product_id)
            return await self._with_stock(tenant, product, need_stock, erp_freshness)

    async def merge(self, tenant: str, product: Product, *, need_stock: bool) -> ProductView:
        """A product just written, merged with its stock."""
        with context.budget(self._budgets.read_s):
            read = await self._with_stock(tenant, product, need_stock, Freshness(False, False))
        return read.view

    async def _with_stock(
        self, tenant: str, product: Product, need_stock: bool, erp_freshness: Freshness
    ) -> Read:
        stock, stock_freshness = await self._stock_for(tenant, [product.sku], need_stock)
        freshness = erp_freshness & stock_freshness
        view = ProductView(product, None if stock is None else stock[product.sku], freshness.stale)
        return Read(view, freshness)

    async def _stock_for(
        self, tenant: str, skus: Sequence[str], need_stock: bool
    ) -> tuple[dict[str, Stock] | None, Freshness]:
        """Stock for the SKUs; None when the Warehouse fails and `need_stock` is False."""
        try:
            return await _read_through(
                self._stock, (tenant, tuple(skus)), lambda: self._warehouse.stock(tenant, skus)
            )
        except UPSTREAM_FAILURES:
            if need_stock:
                raise
            return None, Freshness(hit=False, stale=False)

    # Writes ---------------------------------------------------------------

    async def create(
        self, tenant: str, user: str, key: str, request_hash: str, draft: ProductDraft
    ) -> Written:
        """Create or update by SKU, or replay the answer first given for this key."""
        scope = KeyScope(tenant, user)

        async def upsert() -> Saved:
            with context.budget(self._budgets.write_s):
                return await self._erp.upsert(tenant, draft, scope.upstream_key(key))

        claim = Claim(scope, key, "products.create", request_hash)
        async with UnitOfWork(self._engine, self._idempotency) as work:
            done = await work.idempotent(claim, upsert, STORED_SAVE)
        if not done.replayed:
            self._forget(tenant)
        return Written(done.value.product, done.value.created, done.replayed)

    async def update(
        self,
        tenant: str,
        user: str,
        key: str,
        request_hash: str,
        product_id: str,
        expected_version: int,
        draft: ProductDraft,
    ) -> Written:
        """Replace name, description and price at the expected version."""
        scope = KeyScope(tenant, user)

        async def replace() -> Product:
            with context.budget(self._budgets.write_s):
                return await self._erp.replace(
                    tenant, product_id, draft, expected_version, scope.upstream_key(key)
                )

        claim = Claim(scope, key, "products.update", request_hash)
        return await self._write(tenant, claim, replace)

    async def delete(
        self,
        tenant: str,
        user: str,
        key: str | None,
        request_hash: str,
        product_id: str,
        expected_version: int,
    ) -> Written:
        """Soft-delete at the expected version; with a key, a retry replays."""
        if key is None:
            with context.budget(self._budgets.write_s):
                product = await self._erp.delete(tenant, product_id, expected_version, None)
            self._forget(tenant)
            return Written(product, created=False, replayed=False)
        scope = KeyScope(tenant, user)

        async def delete() -> Product:
            with context.budget(self._budgets.write_s):
                return await self._erp.delete(
                    tenant, product_id, expected_version, scope.upstream_key(key)
                )

        claim = Claim(scope, key, "products.delete", request_hash)
        return await self._write(tenant, claim, delete)

    async def _write(
        self, tenant: str, claim: Claim, effect: Callable[[], Awaitable[Product]]
    ) -> Written:
        """An idempotent change of an existing product (never a creation)."""
        async with UnitOfWork(self._engine, self._idempotency) as work:
            done = await work.idempotent(claim, effect, STORED_PRODUCT)
        if not done.replayed:
            self._forget(tenant)
        return Written(done.value, created=False, replayed=done.replayed)

    def _forget(self, tenant: str) -> None:
        """Drop the tenant's cached pages and items: the next read sees the write."""
        self._products.invalidate_where(lambda key: key[1] == tenant)
