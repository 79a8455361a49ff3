"""The fake Routing service: where a shipment goes next after a courier event, over HTTP.

    POST /routes                    decide a route; `Idempotency-Key` required: 201 new, 200
                                    replayed (`Idempotent-Replayed: true`), 409 key reused for
                                    another body (`idempotency_conflict`)
    GET  /routes/{route_id}         one route of the tenant
    GET  /routes?shipment_id=...    {"items": [...]}: the tenant's routes for a shipment, oldest first

A route is `{"route_id", "shipment_id", "order_id", "hub", "lane", "eta",
"created_at", "idempotency_key"}`. The decision depends only on the request
(the hub on the destination's country and postal area, the lane and transit
time on the hub and priority, express being faster); only `route_id` and the
moments differ between two equal requests with different keys. Keys are per
tenant and compared on the body's meaning, not its spelling. Routes live in
memory and are never evicted. A real routing engine is slow, so `python -m stubs routing` starts with
2 s of injected latency unless `STUB_FAULTS` says otherwise (see `stubs.__main__`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from stubs import (
    Keyed,
    UpstreamError,
    bad_request,
    fingerprint,
    format_ts,
    idempotency_key,
    only_fields,
    parse_object,
    str_field,
    tenant_of,
    utc_now,
)
from stubs.faults import FaultInjector, application

_REQUEST_FIELDS = ("shipment_id", "order_id", "event_type", "status", "destination", "priority")
_DESTINATION_FIELDS = ("country", "postal_code", "city")
_COUNTRY = re.compile(r"[A-Z]{2}")
PRIORITIES = ("standard", "express")
# Hours from the decision to delivery before the lane's spread: express skips the overnight sort.
_BASE_HOURS = {"standard": 48, "express": 12}
_LANES = 8


@dataclass(frozen=True)
class RouteRequest:
    """A validated `POST /routes` body; equal requests route the same way."""

    shipment_id: str
    order_id: str | None
    event_type: str
    status: str
    country: str
    postal_code: str
    city: str
    priority: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RouteRequest:
        """The request a body asks for; 400 on unknown fields or malformed values."""
        only_fields(body, _REQUEST_FIELDS)
        order_id = body.get("order_id")
        if order_id is not None:
            order_id = str_field(body, "order_id", low=1, high=128)
        destination = body.get("destination")
        if not isinstance(destination, dict):
            raise bad_request("destination must be an object with country, postal_code, city")
        only_fields(destination, _DESTINATION_FIELDS)
        country = destination.get("country")
        if not isinstance(country, str) or not _COUNTRY.fullmatch(country):
            raise bad_request(f"destination.country must be two capital letters, got {country!r}")
        priority = body.get("priority")
        if priority not in PRIORITIES:
            raise bad_request(f"priority must be one of {', '.join(PRIORITIES)}")
        return cls(
            shipment_id=str_field(body, "shipment_id", low=1, high=128),
            order_id=order_id,
            event_type=str_field(body, "event_type", low=1, high=64),
            status=str_field(body, "status", low=1, high=64),
            country=country,
            postal_code=str_field(destination, "postal_code", low=1, high=16),
            city=str_field(destination, "city", low=1, high=128),
            priority=priority,
        )


@dataclass(frozen=True)
class Route:
    """A routing decision for one shipment, made under one Idempotency-Key."""

    route_id: str
    shipment_id: str
    order_id: str | None
    hub: str
    lane: str
    eta: datetime
    created_at: datetime
    idempotency_key: str

    def to_json(self) -> dict[str, Any]:
        return {
            "route_id": self.route_id,
            "shipment_id": self.shipment_id,
            "order_id": self.order_id,
            "hub": self.hub,
            "lane": self.lane,
            "eta": format_ts(self.eta),
            "created_at": format_ts(self.created_at),
            "idempotency_key": self.idempotency_key,
        }


def decide(request: RouteRequest, key: str, now: datetime) -> Route:
    """The route for a request: a pure function of it, apart from the id and the moments."""
    # The postal area (its first two letters or digits) picks the hub, as sorting centres do.
    area = "".join(c for c in request.postal_code.upper() if c.isalnum())[:2] or "00"
    hub = f"HUB-{request.country}-{area}"
    digest = int.from_bytes(hashlib.sha256(f"{hub}/{request.priority}".encode()).digest()[:4])
    lane_no = digest % _LANES + 1
    eta = now + timedelta(hours=_BASE_HOURS[request.priority] + 3 * lane_no)
    return Route(
        route_id=f"RT-{uuid.uuid4().hex}",
        shipment_id=request.shipment_id,
        order_id=request.order_id,
        hub=hub,
        lane=f"{hub}/{request.priority.upper()}-{lane_no}",
        eta=eta,
        created_at=now,
        idempotency_key=key,
    )


class Routes:
    """Every tenant's routes. No method awaits, so each change is atomic on the event loop."""

    def __init__(self) -> None:
        self._by_id: dict[tuple[str, str], Route] = {}  # (tenant, route_id)
        self._by_key: Keyed[Route] = Keyed("route request")
        self._by_shipment: dict[tuple[str, str], list[Route]] = {}  # oldest first

    def create(self, tenant: str, key: str, request: RouteRequest) -> tuple[Route, bool]:
        """The route made under this key (replayed), or a new one; and whether it is new."""
        request_fingerprint = fingerprint(request)
        stored = self._by_key.made(tenant, key, request_fingerprint)
        if stored is not None:
            return stored, False
        route = decide(request, key, utc_now())
        self._by_key.remember(tenant, key, request_fingerprint, route)
        self._by_id[tenant, route.route_id] = route
        self._by_shipment.setdefault((tenant, route.shipment_id), []).append(route)
        return route, True

    def get(self, tenant: str, route_id: str) -> Route:
        route = self._by_id.get((tenant, route_id))
        if route is None:
            raise UpstreamError(404, "not_found", f"route {route_id} not found")
        return route

    def of_shipment(self, tenant: str, shipment_id: str) -> list[Route]:
        return list(self._by_shipment.get((tenant, shipment_id), []))


class RoutingApi:
    """The HTTP handlers over Routes."""

    def __init__(self, store: Routes) -> None:
        self.store = store

    async def create(self, request: web.Request) -> web.Response:
        tenant, key = tenant_of(request), idempotency_key(request)
        body = await request.read()
        # Nothing below awaits: the key check and storing the new route are one step, so
        # concurrent requests with one key make one route.
        route_request = RouteRequest.from_json(parse_object(body))
        route, created = self.store.create(tenant, key, route_request)
        if created:
            headers = {"Location": f"/routes/{route.route_id}"}
            return web.json_response(route.to_json(), status=201, headers=headers)
        replayed = {"Idempotent-Replayed": "true"}
        return web.json_response(route.to_json(), status=200, headers=replayed)

    async def read_one(self, request: web.Request) -> web.Response:
        route = self.store.get(tenant_of(request), request.match_info["route_id"])
        return web.json_response(route.to_json())

    async def read_many(self, request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        given = request.query.getall("shipment_id", [])
        if len(given) != 1 or not 0 < len(given[0]) <= 128:
            raise bad_request("give exactly one shipment_id parameter (1-128 characters)")
        items = [route.to_json() for route in self.store.of_shipment(tenant, given[0])]
        return web.json_response({"items": items})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/routes", self.create),
            web.get("/routes", self.read_many),
            web.get("/routes/{route_id}", self.read_one),
        ]


def create_app(data_dir: Path, injector: FaultInjector) -> web.Application:
    """The Routing app, with no routes yet (`data_dir` is unused: nothing is seeded)."""
    return application(RoutingApi(Routes()).routes(), injector)
