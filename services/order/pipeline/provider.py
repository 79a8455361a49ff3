"""The Payment provider over the kit's resilient HTTP client.

A charge is sent under the payment row's id as its `Idempotency-Key`, so it is
safe to retry (the client does, on timeouts and 502/503/504) and safe to ask
about later: the provider answers the charge made under a key, or 404 when it
never saw the key. A refund is keyed by the payment id too, so one payment is
refunded at most once however often the step runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from services.kit import errors
from services.kit.upstream import Upstream


class Settled(StrEnum):
    """What the provider says became of a charge."""

    CAPTURED = "captured"
    DECLINED = "declined"
    UNKNOWN = "unknown"  # no answer: the reconciler asks later
    ABSENT = "absent"  # the provider never saw the key: nothing was charged


@dataclass(frozen=True)
class ChargeOutcome:
    settled: Settled
    charge_id: str | None = None
    decline_code: str | None = None


@dataclass(frozen=True)
class ChargeRequest:
    payment_id: uuid.UUID
    tenant: str
    order_id: uuid.UUID
    amount_cents: int


class ProviderRefused(Exception):
    """The provider refused a lookup or a refund: the step fails and the queue retries it."""


def _outcome(body: dict[str, object]) -> ChargeOutcome:
    status = body.get("status")
    charge_id = str(body["id"]) if body.get("id") else None
    if status == "captured":
        return ChargeOutcome(Settled.CAPTURED, charge_id)
    if status == "declined":
        code = body.get("declineCode")
        return ChargeOutcome(Settled.DECLINED, charge_id, str(code) if code else "declined")
    return ChargeOutcome(Settled.UNKNOWN, charge_id)


class PaymentProvider:
    """Charges, looks up and refunds at the provider for one currency."""

    def __init__(self, upstream: Upstream, currency: str) -> None:
        self._http = upstream
        self._currency = currency

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Captured or declined as the provider answered; UNKNOWN when it did not;
        errors.CircuitOpen when the breaker stopped it (the provider is down)."""
        try:
            response = await self._http.request(
                "POST",
                "/v1/charges",
                json={
                    "tenant": request.tenant,
                    "orderId": str(request.order_id),
                    "amountCents": request.amount_cents,
                    "currency": self._currency,
                },
                headers={
                    "Idempotency-Key": str(request.payment_id),
                    "X-Tenant-Id": request.tenant,
                },
                idempotent=True,  # the key makes a resend the same charge
            )
        except errors.CircuitOpen:
            raise  # down for everyone: the caller waits for the breaker and resumes the key
        except (errors.Unavailable, errors.DeadlineExceeded):
            return ChargeOutcome(Settled.UNKNOWN)
        if response.status_code in (200, 201):
            return _outcome(response.json())
        if response.status_code == 402:
            return _outcome(response.json().get("charge") or {"status": "declined"})
        # Anything else (a 409 on a reused key, a 4xx on a body it refuses) leaves the
        # outcome to the lookup by key, which is the provider's record of truth.
        return ChargeOutcome(Settled.UNKNOWN)

    async def find(self, tenant: str, payment_id: uuid.UUID) -> ChargeOutcome:
        """The charge made under the payment's key: ABSENT when never made; raises
        errors.Unavailable / DeadlineExceeded when the provider does not answer."""
        response = await self._http.request(
            "GET",
            "/v1/charges",
            params={"idempotencyKey": str(payment_id)},
            headers={"X-Tenant-Id": tenant},
        )
        if response.status_code == 404:
            return ChargeOutcome(Settled.ABSENT)
        if response.status_code != 200:
            raise ProviderRefused(
                f"the lookup of a charge was refused: HTTP {response.status_code}"
            )
        return _outcome(response.json())

    async def refund(self, tenant: str, payment_id: uuid.UUID, charge_id: str) -> str:
        """Refund what is left of a capture (once per payment); the refund's id."""
        response = await self._http.request(
            "POST",
            f"/v1/charges/{charge_id}/refunds",
            headers={"Idempotency-Key": f"refund-{payment_id}", "X-Tenant-Id": tenant},
            idempotent=True,
        )
        if response.status_code not in (200, 201):
            raise ProviderRefused(f"the refund was refused: HTTP {response.status_code}")
        return str(response.json()["id"])
