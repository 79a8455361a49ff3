"""The fake Payment provider: charges captured once per idempotency key, and refunds, over HTTP.

    POST /v1/charges                    capture; `Idempotency-Key` required (the platform's
                                        payment id): 201 captured, 402 declined, 200 replayed
                                        (`Idempotent-Replayed: true`), 409 the key reused for
                                        another body (`idempotency_conflict`)
    GET  /v1/charges/{id}               one charge of the tenant
    GET  /v1/charges?idempotencyKey=k   the charge made under a key; 404 when never seen
    POST /v1/charges/{id}/refunds       refund part or all of a captured charge; its own
                                        `Idempotency-Key` required: 201, 200 replayed, 409
    GET    /_admin/ledger?orderId=&tenant=   what happened to an order: captures, refunds and
                                             declines, each with a count and a sum
    DELETE /_admin/ledger               forget every charge and refund

A charge body is `{"tenant", "orderId", "amountCents", "currency"}`; its
`tenant` must be the `X-Tenant-Id` header's. A charge is `{"id", "idempotencyKey",
"tenant", "orderId", "amountCents", "currency", "status": "captured" | "declined",
"declineCode", "refundedCents", "createdAt"}`. A decline is an answer too: the
key replays it, and the lookup by key finds it. Declines are injected through
`PUT /_admin/faults` (`decline_rate`, `decline_code`, `decline_amount_cents`,
with `tenant` and `path_prefix` as for every fault); `phase: "after"` makes an
injected 5xx or timeout strike after the charge was captured, which a reconciler
resolves through the lookup by key, never by charging again. Everything lives in
memory.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from stubs import (
    MAX_INT32,
    Keyed,
    UpstreamError,
    bad_request,
    fingerprint,
    format_ts,
    idempotency_key,
    int_field,
    only_fields,
    parse_object,
    str_field,
    tenant_of,
    utc_now,
)
from stubs.faults import FaultInjector, application

_CHARGE_FIELDS = ("tenant", "orderId", "amountCents", "currency")
_CURRENCY = re.compile(r"[A-Z]{3}")
CAPTURED, DECLINED = "captured", "declined"


@dataclass(frozen=True)
class ChargeRequest:
    """A validated `POST /v1/charges` body."""

    tenant: str
    order_id: str
    amount_cents: int
    currency: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any], tenant: str) -> ChargeRequest:
        only_fields(body, _CHARGE_FIELDS)
        if body.get("tenant") != tenant:
            raise bad_request("tenant must be the X-Tenant-Id header's tenant")
        currency = body.get("currency")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise bad_request(
                f"currency must be three capital letters (ISO 4217), got {currency!r}"
            )
        return cls(
            tenant=tenant,
            order_id=str_field(body, "orderId", low=1, high=128),
            amount_cents=int_field(body, "amountCents", low=1),
            currency=currency,
        )


@dataclass(frozen=True)
class Charge:
    """One charge attempt the provider saw, captured or declined."""

    id: str
    idempotency_key: str
    tenant: str
    order_id: str
    amount_cents: int
    currency: str
    status: str
    decline_code: str | None
    refunded_cents: int
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "idempotencyKey": self.idempotency_key,
            "tenant": self.tenant,
            "orderId": self.order_id,
            "amountCents": self.amount_cents,
            "currency": self.currency,
            "status": self.status,
            "declineCode": self.decline_code,
            "refundedCents": self.refunded_cents,
            "createdAt": format_ts(self.created_at),
        }


@dataclass(frozen=True)
class RefundRequest:
    """A validated refund: of which charge, and how much (None: what is left)."""

    charge_id: str
    amount_cents: int | None


@dataclass(frozen=True)
class Refund:
    """Money given back from one captured charge."""

    id: str
    charge_id: str
    idempotency_key: str
    tenant: str
    order_id: str
    amount_cents: int
    currency: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "chargeId": self.charge_id,
            "idempotencyKey": self.idempotency_key,
            "tenant": self.tenant,
            "orderId": self.order_id,
            "amountCents": self.amount_cents,
            "currency": self.currency,
            "createdAt": format_ts(self.created_at),
        }


def _summary(records: list[Any], amounts: bool = True) -> dict[str, Any]:
    summary: dict[str, Any] = {"count": len(records), "items": [r.to_json() for r in records]}
    if amounts:
        summary["amountCents"] = sum(r.amount_cents for r in records)
    return summary


class Ledger:
    """Every tenant's charges and refunds. No method awaits, so each change is atomic on the
    event loop: concurrent requests with one key make one charge."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._charges: dict[tuple[str, str], Charge] = {}  # (tenant, id), in creation order
        self._charge_keys: Keyed[str] = Keyed("charge")  # -> charge id
        self._refunds: list[Refund] = []
        self._refund_keys: Keyed[Refund] = Keyed("refund")

    def charge(
        self, key: str, request: ChargeRequest, decline: Callable[[], str | None]
    ) -> tuple[Charge, bool]:
        """The charge made under this key (replayed), or a new one, declined with the code
        `decline` gives (None: captured); and whether it is new."""
        request_fingerprint = fingerprint(request)
        made = self._charge_keys.made(request.tenant, key, request_fingerprint)
        if made is not None:
            return self._charges[request.tenant, made], False
        decline_code = decline()
        charge = Charge(
            id=f"ch_{uuid.uuid4().hex}",
            idempotency_key=key,
            tenant=request.tenant,
            order_id=request.order_id,
            amount_cents=request.amount_cents,
            currency=request.currency,
            status=CAPTURED if decline_code is None else DECLINED,
            decline_code=decline_code,
            refunded_cents=0,
            created_at=utc_now(),
        )
        self._charges[charge.tenant, charge.id] = charge
        self._charge_keys.remember(charge.tenant, key, request_fingerprint, charge.id)
        return charge, True

    def get(self, tenant: str, charge_id: str) -> Charge:
        charge = self._charges.get((tenant, charge_id))
        if charge is None:
            raise UpstreamError(404, "not_found", f"charge {charge_id} not found")
        return charge

    def by_key(self, tenant: str, key: str) -> Charge:
        """The charge made under a key, whatever its body; 404 when the key was never seen."""
        charge_id = self._charge_keys.get(tenant, key)
        if charge_id is None:
            raise UpstreamError(404, "not_found", "no charge was made under this Idempotency-Key")
        return self._charges[tenant, charge_id]

    def refund(self, tenant: str, key: str, request: RefundRequest) -> tuple[Refund, bool]:
        """The refund made under this key (replayed), or a new one within what is left."""
        request_fingerprint = fingerprint(request)
        made = self._refund_keys.made(tenant, key, request_fingerprint)
        if made is not None:
            return made, False
        charge = self.get(tenant, request.charge_id)
        if charge.status != CAPTURED:
            raise UpstreamError(
                409, "charge_not_captured", f"charge {charge.id} is {charge.status}"
            )
        left = charge.amount_cents - charge.refunded_cents
        amount = left if request.amount_cents is None else request.amount_cents
        if not 0 < amount <= left:
            message = f"refund of {amount} exceeds the {left} cents left to refund"
            raise UpstreamError(409, "refund_exceeds_charge", message)
        refund = Refund(
            id=f"re_{uuid.uuid4().hex}",
            charge_id=charge.id,
            idempotency_key=key,
            tenant=tenant,
            order_id=charge.order_id,
            amount_cents=amount,
            currency=charge.currency,
            created_at=utc_now(),
        )
        self._charges[tenant, charge.id] = replace(
            charge, refunded_cents=charge.refunded_cents + amount
        )
        self._refunds.append(refund)
        self._refund_keys.remember(tenant, key, request_fingerprint, refund)
        return refund, True

    def of_order(self, order_id: str, tenant: str | None) -> dict[str, Any]:
        """An order's captures, refunds and declines (of one tenant, when given)."""

        def ours(record: Charge | Refund) -> bool:
            return record.order_id == order_id and tenant in (None, record.tenant)

        charges = [c for c in self._charges.values() if ours(c)]
        return {
            "orderId": order_id,
            "tenant": tenant,
            "captures": _summary([c for c in charges if c.status == CAPTURED]),
            "refunds": _summary([r for r in self._refunds if ours(r)]),
            "declines": _summary([c for c in charges if c.status == DECLINED], amounts=False),
        }


def _charge_response(charge: Charge, created: bool) -> web.Response:
    if created:
        headers = {"Location": f"/v1/charges/{charge.id}"}
    else:
        headers = {"Idempotent-Replayed": "true"}
    if charge.status == DECLINED:
        error = {"code": charge.decline_code, "message": "the charge was declined"}
        body = {"error": error, "charge": charge.to_json()}
        return web.json_response(body, status=402, headers=headers)
    return web.json_response(charge.to_json(), status=201 if created else 200, headers=headers)


def _one_query(request: web.Request, name: str) -> str:
    given = request.query.getall(name, [])
    if len(given) != 1 or not 0 < len(given[0]) <= 255:
        raise bad_request(f"give exactly one {name} parameter (1-255 characters)")
    return given[0]


class PaymentsApi:
    """The HTTP handlers over a Ledger; a write reads its body, then runs without awaiting."""

    def __init__(self, ledger: Ledger, injector: FaultInjector) -> None:
        self.ledger = ledger
        self.injector = injector

    async def create_charge(self, request: web.Request) -> web.Response:
        tenant, key = tenant_of(request), idempotency_key(request)
        charge_request = ChargeRequest.from_json(parse_object(await request.read()), tenant)

        def decline() -> str | None:
            return self.injector.decline_code(request, charge_request.amount_cents)

        return _charge_response(*self.ledger.charge(key, charge_request, decline))

    async def get_charge(self, request: web.Request) -> web.Response:
        charge = self.ledger.get(tenant_of(request), request.match_info["id"])
        return web.json_response(charge.to_json())

    async def find_charge(self, request: web.Request) -> web.Response:
        tenant, key = tenant_of(request), _one_query(request, "idempotencyKey")
        return web.json_response(self.ledger.by_key(tenant, key).to_json())

    async def create_refund(self, request: web.Request) -> web.Response:
        tenant, key = tenant_of(request), idempotency_key(request)
        body = await request.read()
        data = parse_object(body) if body.strip() else {}
        only_fields(data, ("amountCents",))
        amount = int_field(data, "amountCents", low=1, high=MAX_INT32) if data else None
        refund_request = RefundRequest(request.match_info["id"], amount)
        refund, created = self.ledger.refund(tenant, key, refund_request)
        if created:
            return web.json_response(refund.to_json(), status=201)
        return web.json_response(refund.to_json(), headers={"Idempotent-Replayed": "true"})

    async def ledger_of_order(self, request: web.Request) -> web.Response:
        order_id = _one_query(request, "orderId")
        tenant = _one_query(request, "tenant") if "tenant" in request.query else None
        return web.json_response(self.ledger.of_order(order_id, tenant))

    async def reset(self, request: web.Request) -> web.Response:
        self.ledger.reset()
        return web.json_response({"status": "reset"})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/charges", self.create_charge),
            web.get("/v1/charges", self.find_charge),
            web.get("/v1/charges/{id}", self.get_charge),
            web.post("/v1/charges/{id}/refunds", self.create_refund),
            web.get("/_admin/ledger", self.ledger_of_order),
            web.delete("/_admin/ledger", self.reset),
        ]


def create_app(data_dir: Path, injector: FaultInjector) -> web.Application:
    """The Payment provider app, with no charges yet (`data_dir` is unused: nothing is seeded)."""
    return application(PaymentsApi(Ledger(), injector).routes(), injector)
