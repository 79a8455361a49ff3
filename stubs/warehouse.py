"""The fake Warehouse: physical stock per SKU of each tenant, over HTTP.

    GET /stock?sku=A&sku=B   {"items": [...]}, one per distinct SKU (1..200) in request order
    GET /stock/{sku}         one item
    PUT /stock/{sku}         {"on_hand": n, "reserved": n = 0}: set it (tests and benchmarks)

An item is `{"sku", "on_hand", "reserved", "available", "updated_at"}` with
available = max(on_hand - reserved, 0). A SKU the warehouse never stocked has
zeros and `updated_at: null`: nothing on hand is a fact, not a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from stubs import (
    UpstreamError,
    bad_request,
    format_ts,
    int_field,
    only_fields,
    parse_object,
    parse_ts,
    read_seed,
    sku_of,
    tenant_of,
    utc_now,
)
from stubs.faults import FaultInjector, application

MAX_SKUS = 200


@dataclass(frozen=True)
class StockLevel:
    """What the warehouse holds of one SKU; `updated_at` is None if it never stocked it."""

    on_hand: int
    reserved: int
    updated_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, updated_at: datetime) -> StockLevel:
        """The levels of a PUT body, as of `updated_at`; 400 when malformed."""
        only_fields(data, ("on_hand", "reserved"))
        on_hand, reserved = int_field(data, "on_hand"), int_field(data, "reserved", default=0)
        return cls(on_hand=on_hand, reserved=reserved, updated_at=updated_at)

    def to_json(self, sku: str) -> dict[str, Any]:
        return {
            "sku": sku,
            "on_hand": self.on_hand,
            "reserved": self.reserved,
            "available": max(self.on_hand - self.reserved, 0),
            "updated_at": None if self.updated_at is None else format_ts(self.updated_at),
        }


NEVER_STOCKED = StockLevel(on_hand=0, reserved=0, updated_at=None)


class Stock:
    """Every tenant's stock levels; each change is one assignment, so atomic."""

    def __init__(self) -> None:
        self._levels: dict[tuple[str, str], StockLevel] = {}

    def level(self, tenant: str, sku: str) -> StockLevel:
        return self._levels.get((tenant, sku), NEVER_STOCKED)

    def set(self, tenant: str, sku: str, level: StockLevel) -> StockLevel:
        self._levels[tenant, sku] = level
        return level


class WarehouseApi:
    """The HTTP handlers over Stock."""

    def __init__(self, stock: Stock) -> None:
        self.stock = stock

    async def read_many(self, request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        requested = request.query.getall("sku", [])
        if not 1 <= len(requested) <= MAX_SKUS:
            raise bad_request(f"give 1..{MAX_SKUS} sku parameters, got {len(requested)}")
        skus = dict.fromkeys(sku_of(sku) for sku in requested)  # distinct, in request order
        items = [self.stock.level(tenant, sku).to_json(sku) for sku in skus]
        return web.json_response({"items": items})

    async def read_one(self, request: web.Request) -> web.Response:
        tenant, sku = tenant_of(request), sku_of(request.match_info["sku"])
        return web.json_response(self.stock.level(tenant, sku).to_json(sku))

    async def put_one(self, request: web.Request) -> web.Response:
        tenant, sku = tenant_of(request), sku_of(request.match_info["sku"])
        level = StockLevel.from_json(parse_object(await request.read()), updated_at=utc_now())
        return web.json_response(self.stock.set(tenant, sku, level).to_json(sku))

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/stock", self.read_many),
            web.get("/stock/{sku}", self.read_one),
            web.put("/stock/{sku}", self.put_one),
        ]


def load_stock(path: Path) -> Stock:
    """The stock of a seed file: `{"tenants": {"<tenant>": {"<sku>": {levels}}}}`."""
    stock = Stock()
    for tenant, entries in read_seed(path).items():
        for sku, data in entries.items():
            try:
                levels = {k: v for k, v in data.items() if k != "updated_at"}
                moment = parse_ts(data.get("updated_at"))
                stock.set(tenant, sku_of(sku), StockLevel.from_json(levels, updated_at=moment))
            except (UpstreamError, AttributeError) as exc:
                raise ValueError(f"{path}: tenant {tenant}: {sku}: {exc}") from exc
    return stock


def create_app(data_dir: Path, injector: FaultInjector) -> web.Application:
    """The Warehouse app seeded from `<data_dir>/stock.json`."""
    return application(WarehouseApi(load_stock(data_dir / "stock.json")).routes(), injector)
