"""gRPC adapter for shop.product.v2: the v1 reads plus availability and freshness."""

from __future__ import annotations

from shop.product.v2 import product_pb2, product_pb2_grpc

from services.kit import calls, identity, wire
from services.kit.wire import timestamp
from services.product.domain import ProductView, parse_id
from services.product.servicer_v1 import cache_status
from services.product.usecases import Catalog, Page

Context = calls.Context


def to_proto(view: ProductView, low_stock_threshold: int) -> product_pb2.Product:
    """The v2 wire form: stock only when the Warehouse said it."""
    p = view.product
    msg = product_pb2.Product(
        id=p.id,
        sku=p.sku,
        name=p.name,
        description=p.description,
        price_cents=p.price_cents,
        version=p.version,
        availability=view.availability(low_stock_threshold).value,
        stale=view.stale,
        created_at=timestamp(p.created_at),
        updated_at=timestamp(p.updated_at),
    )
    if view.stock is not None:
        msg.stock = view.stock.available
        if view.stock.updated_at is not None:
            msg.stock_updated_at.CopyFrom(timestamp(view.stock.updated_at))
    return msg


class ProductServicerV2(product_pb2_grpc.ProductServiceServicer):
    """shop.product.v2.ProductService over the Catalog use cases."""

    def __init__(self, catalog: Catalog, low_stock_threshold: int) -> None:
        self._catalog = catalog
        self._low = low_stock_threshold
        # A cached page is serialised once, not on every read of it.
        self._pages = wire.Encodings()

    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: Context
    ) -> product_pb2.ListProductsResponse:
        page = await self._catalog.page(
            identity.tenant(context), request.limit, request.cursor, need_stock=False
        )
        await calls.send_headers(context, extra=cache_status(page.freshness))
        return self._pages.get(page, lambda: self._list_response(page))

    def _list_response(self, page: Page) -> product_pb2.ListProductsResponse:
        response = product_pb2.ListProductsResponse(
            items=[to_proto(v, self._low) for v in page.views]
        )
        if page.next_cursor is not None:
            response.next_cursor = page.next_cursor
        return response

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: Context
    ) -> product_pb2.Product:
        read = await self._catalog.get(
            identity.tenant(context), parse_id(request.id), need_stock=False
        )
        await calls.send_headers(
            context, version=read.view.product.version, extra=cache_status(read.freshness)
        )
        return to_proto(read.view, self._low)
