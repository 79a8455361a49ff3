"""gRPC adapter for shop.product.v1: metadata and protos in, use case call, protos out."""

from __future__ import annotations

import uuid

from shop.product.v1 import product_pb2, product_pb2_grpc

from services.kit import calls, identity, wire
from services.kit.idempotency import fingerprint
from services.product.domain import ProductDraft, ProductView, parse_id
from services.product.ledger import Ledger
from services.product.usecases import Catalog, Freshness, Page

Context = calls.Context


def cache_status(freshness: Freshness) -> dict[str, str]:
    """The RFC 9211 Cache-Status header of a read, but for a fresh hit: the edge adds
    that one itself (the route's success headers, services/topology.py), so the common
    answer costs no initial-metadata operation of its own. Over native gRPC no
    `cache-status` therefore means a fresh hit."""
    if freshness.stale:
        return {"cache-status": "shop-products; hit; detail=stale-if-error"}
    return {} if freshness.hit else {"cache-status": "shop-products; fwd=miss"}


def to_proto(view: ProductView) -> product_pb2.Product:
    """The v1 wire form; v1 views always carry stock (Catalog reads with need_stock)."""
    p = view.product
    assert view.stock is not None, "a v1 view is never half-merged"
    return product_pb2.Product(
        id=p.id,
        sku=p.sku,
        name=p.name,
        description=p.description,
        price_cents=p.price_cents,
        version=p.version,
        stock=view.stock.available,
    )


def list_response(page: Page) -> product_pb2.ListProductsResponse:
    response = product_pb2.ListProductsResponse(items=[to_proto(v) for v in page.views])
    if page.next_cursor is not None:
        response.next_cursor = page.next_cursor
    return response


def _draft(
    sku: str | None, request: product_pb2.CreateProductRequest | product_pb2.UpdateProductRequest
) -> ProductDraft:
    return ProductDraft(
        sku=sku,
        name=request.name,
        description=request.description,
        price_cents=request.price_cents if request.HasField("price_cents") else None,
    )


class ProductServicerV1(product_pb2_grpc.ProductServiceServicer):
    """shop.product.v1.ProductService over the Catalog use cases."""

    def __init__(self, catalog: Catalog, ledger: Ledger) -> None:
        self._catalog = catalog
        self._ledger = ledger
        # A cached page is serialised once, not on every read of it.
        self._pages = wire.Encodings()

    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: Context
    ) -> product_pb2.ListProductsResponse:
        page = await self._catalog.page(
            identity.tenant(context), request.limit, request.cursor, need_stock=True
        )
        await calls.send_headers(context, extra=cache_status(page.freshness))
        return self._pages.get(page, lambda: list_response(page))

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: Context
    ) -> product_pb2.Product:
        read = await self._catalog.get(
            identity.tenant(context), parse_id(request.id), need_stock=True
        )
        await calls.send_headers(
            context, version=read.view.product.version, extra=cache_status(read.freshness)
        )
        return to_proto(read.view)

    async def CreateProduct(
        self, request: product_pb2.CreateProductRequest, context: Context
    ) -> product_pb2.Product:
        tenant = identity.tenant(context)
        key = calls.require_header(context, "idempotency-key", "Idempotency-Key")
        draft = _draft(request.sku, request)
        body_hash = fingerprint("CreateProduct", request.SerializeToString(deterministic=True))
        written = await self._catalog.create(tenant, identity.user(context), key, body_hash, draft)
        await calls.send_headers(
            context,
            http_status=201 if written.created and not written.replayed else 200,
            version=written.product.version,
            replayed=written.replayed,
        )
        return to_proto(await self._catalog.merge(tenant, written.product, need_stock=True))

    async def UpdateProduct(
        self, request: product_pb2.UpdateProductRequest, context: Context
    ) -> product_pb2.Product:
        tenant = identity.tenant(context)
        product_id = parse_id(request.id)
        key = calls.require_header(context, "idempotency-key", "Idempotency-Key")
        expected = calls.require_if_match(context)
        draft = _draft(None, request)
        body_hash = fingerprint("UpdateProduct", request.SerializeToString(deterministic=True))
        user = identity.user(context)
        written = await self._catalog.update(
            tenant, user, key, body_hash, product_id, expected, draft
        )
        await calls.send_headers(
            context,
            version=written.product.version,
            replayed=written.replayed,
        )
        return to_proto(await self._catalog.merge(tenant, written.product, need_stock=True))

    async def DeleteProduct(
        self, request: product_pb2.DeleteProductRequest, context: Context
    ) -> product_pb2.DeleteProductResponse:
        tenant = identity.tenant(context)
        product_id = parse_id(request.id)
        key = calls.header(context, "idempotency-key") or None
        expected = calls.require_if_match(context)
        body_hash = fingerprint("DeleteProduct", request.SerializeToString(deterministic=True))
        user = identity.user(context)
        written = await self._catalog.delete(tenant, user, key, body_hash, product_id, expected)
        await calls.send_headers(
            context,
            version=written.product.version,
            replayed=written.replayed,
        )
        return product_pb2.DeleteProductResponse(id=product_id, version=written.product.version)

    async def GetProductInventory(
        self, request: product_pb2.GetProductInventoryRequest, context: Context
    ) -> product_pb2.ProductInventory:
        """The ledger's figures for a live catalogue product (404 as GetProduct)."""
        tenant = identity.tenant(context)
        read = await self._catalog.get(tenant, parse_id(request.id), need_stock=False)
        level = await self._ledger.level(tenant, uuid.UUID(read.view.product.id))
        await calls.send_headers(context, extra=cache_status(read.freshness))
        return product_pb2.ProductInventory(
            product_id=read.view.product.id,
            sku=read.view.product.sku,
            on_hand=level.on_hand,
            reserved=level.reserved,
            available=level.available,
        )
