"""The fake Payment provider as a real process: one capture per key, declines, lost answers,
lookups by key and bounded refunds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.upstream_admin import running_stub


@pytest.fixture(scope="module")
def payments_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Payment provider stub of this module's own, without faults."""
    with running_stub("payments", tmp_path_factory.mktemp("payments")) as url:
        yield url


@pytest.fixture
async def payments(payments_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=payments_url, timeout=10) as client:
        yield client
        await client.delete("/_admin/faults")


def _as(tenant: str, key: str | None = None) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, **({"Idempotency-Key": key} if key is not None else {})}


def _charge(tenant: str, order: str, amount: int = 2500, **changes: Any) -> dict[str, Any]:
    return {"tenant": tenant, "orderId": order, "amountCents": amount, "currency": "EUR", **changes}


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def _key() -> str:
    return str(uuid.uuid4())  # as the platform's payment row id


async def _ledger(client: httpx.AsyncClient, tenant: str, order: str) -> dict[str, Any]:
    response = await client.get("/_admin/ledger", params={"orderId": order, "tenant": tenant})
    assert response.status_code == 200, response.text
    ledger: dict[str, Any] = response.json()
    return ledger


async def _captures(client: httpx.AsyncClient, tenant: str, order: str) -> int:
    return int((await _ledger(client, tenant, order))["captures"]["count"])


async def _by_key(client: httpx.AsyncClient, tenant: str, key: str) -> httpx.Response:
    return await client.get("/v1/charges", params={"idempotencyKey": key}, headers=_as(tenant))


async def _faults(client: httpx.AsyncClient, **config: Any) -> None:
    (await client.put("/_admin/faults", json=config)).raise_for_status()


async def test_a_charge_and_its_replay_make_one_capture(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    key = _key()
    first = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-1"), headers=_as(tenant, key)
    )
    assert first.status_code == 201, first.text
    charge = first.json()
    assert charge["status"] == "captured"
    assert (charge["idempotencyKey"], charge["orderId"], charge["amountCents"]) == (
        key,
        "o-1",
        2500,
    )
    assert first.headers["Location"] == f"/v1/charges/{charge['id']}"

    replay = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-1"), headers=_as(tenant, key)
    )
    assert (replay.status_code, replay.json()) == (200, charge)
    assert replay.headers["Idempotent-Replayed"] == "true"

    ledger = await _ledger(payments, tenant, "o-1")
    assert (ledger["captures"]["count"], ledger["captures"]["amountCents"]) == (1, 2500)
    assert (await payments.get(f"/v1/charges/{charge['id']}", headers=_as(tenant))).json() == charge


async def test_the_same_key_with_another_body_is_a_conflict(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    key = _key()
    await payments.post("/v1/charges", json=_charge(tenant, "o-1"), headers=_as(tenant, key))
    other = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-1", amount=2600), headers=_as(tenant, key)
    )
    assert (other.status_code, _code(other)) == (409, "idempotency_conflict")
    assert await _captures(payments, tenant, "o-1") == 1


async def test_eight_concurrent_requests_with_one_key_make_one_capture(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    key = _key()
    await _faults(payments, latency_ms=50, jitter_ms=50)  # so the eight overlap in the stub
    answers = await asyncio.gather(
        *(
            payments.post("/v1/charges", json=_charge(tenant, "o-8"), headers=_as(tenant, key))
            for _ in range(8)
        )
    )
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert await _captures(payments, tenant, "o-8") == 1


async def test_a_decline_is_402_with_its_code_and_captures_nothing(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    await _faults(payments, decline_rate=1, decline_code="insufficient_funds")
    key = _key()
    declined = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-d"), headers=_as(tenant, key)
    )
    assert (declined.status_code, _code(declined)) == (402, "insufficient_funds")
    assert declined.json()["charge"]["status"] == "declined"
    ledger = await _ledger(payments, tenant, "o-d")
    assert (ledger["captures"]["count"], ledger["declines"]["count"]) == (0, 1)

    # The key replays the decline, even once declines are off, and the lookup finds it.
    await payments.delete("/_admin/faults")
    replay = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-d"), headers=_as(tenant, key)
    )
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (402, "true")
    assert (await _by_key(payments, tenant, key)).json()["declineCode"] == "insufficient_funds"
    assert await _captures(payments, tenant, "o-d") == 0


async def test_declines_can_target_an_amount_or_a_tenant(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    await _faults(payments, decline_rate=1, decline_amount_cents=666)
    unlucky = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-a", amount=666), headers=_as(tenant, _key())
    )
    lucky = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-a", amount=667), headers=_as(tenant, _key())
    )
    assert (unlucky.status_code, _code(unlucky), lucky.status_code) == (402, "card_declined", 201)

    other = f"{tenant}-other"
    await _faults(payments, decline_rate=1, tenant=other)
    theirs = await payments.post(
        "/v1/charges", json=_charge(other, "o-t"), headers=_as(other, _key())
    )
    ours = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-t"), headers=_as(tenant, _key())
    )
    assert (theirs.status_code, ours.status_code) == (402, 201)


async def test_a_share_of_charges_is_declined_repeatably_with_a_seed(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    async def outcomes() -> list[int]:
        await _faults(payments, decline_rate=0.5, seed=7)
        statuses = []
        for _ in range(20):
            response = await payments.post(
                "/v1/charges", json=_charge(tenant, "o-s"), headers=_as(tenant, _key())
            )
            statuses.append(response.status_code)
        return statuses

    first, second = await outcomes(), await outcomes()
    assert first == second
    assert set(first) == {201, 402}


async def test_a_timed_out_charge_is_captured_and_the_lookup_by_key_finds_it(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    key = _key()
    await _faults(payments, timeout_rate=1, hang_s=5, phase="after")
    with pytest.raises(httpx.ReadTimeout):
        await payments.post(
            "/v1/charges", json=_charge(tenant, "o-t"), headers=_as(tenant, key), timeout=0.3
        )
    await payments.delete("/_admin/faults")
    # The reconciler asks what happened to the key; it never charges again.
    found = await _by_key(payments, tenant, key)
    assert found.status_code == 200, found.text
    assert (found.json()["status"], found.json()["idempotencyKey"]) == ("captured", key)
    assert await _captures(payments, tenant, "o-t") == 1


async def test_a_key_the_provider_never_saw_is_404(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    await _faults(payments, timeout_rate=1, hang_s=5)  # before: the hang comes first
    key = _key()
    with pytest.raises(httpx.ReadTimeout):
        await payments.post(
            "/v1/charges", json=_charge(tenant, "o-n"), headers=_as(tenant, key), timeout=0.3
        )
    await payments.delete("/_admin/faults")
    missing = await _by_key(payments, tenant, key)
    assert (missing.status_code, _code(missing)) == (404, "not_found")
    assert await _captures(payments, tenant, "o-n") == 0
    # Keys are per tenant: another tenant's charge is not found under the same key.
    await payments.post("/v1/charges", json=_charge(tenant, "o-n"), headers=_as(tenant, key))
    assert (await _by_key(payments, f"{tenant}-other", key)).status_code == 404


async def test_a_5xx_before_captures_nothing_and_a_5xx_after_captures(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    await _faults(payments, error_rate=1, error_status=500)
    before = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-b"), headers=_as(tenant, _key())
    )
    assert (before.status_code, _code(before)) == (500, "injected_fault")
    assert await _captures(payments, tenant, "o-b") == 0

    key = _key()
    await _faults(payments, error_rate=1, error_status=503, phase="after")
    after = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-b"), headers=_as(tenant, key)
    )
    assert after.status_code == 503
    assert await _captures(payments, tenant, "o-b") == 1
    # A retry with the same key after the lost answer gets the capture, not a second one.
    await payments.delete("/_admin/faults")
    retry = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-b"), headers=_as(tenant, key)
    )
    assert retry.status_code == 200
    assert await _captures(payments, tenant, "o-b") == 1


async def test_injected_latency_delays_a_charge(payments: httpx.AsyncClient, tenant: str) -> None:
    await _faults(payments, latency_ms=300)
    started = time.monotonic()
    response = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-l"), headers=_as(tenant, _key())
    )
    assert response.status_code == 201
    assert time.monotonic() - started >= 0.3


async def _captured(client: httpx.AsyncClient, tenant: str, order: str, amount: int) -> str:
    response = await client.post(
        "/v1/charges", json=_charge(tenant, order, amount=amount), headers=_as(tenant, _key())
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_refunds_are_idempotent_and_at_most_the_charge(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    charge_id = await _captured(payments, tenant, "o-r", 1000)
    path, key = f"/v1/charges/{charge_id}/refunds", _key()
    first = await payments.post(path, json={"amountCents": 600}, headers=_as(tenant, key))
    assert first.status_code == 201, first.text
    replay = await payments.post(path, json={"amountCents": 600}, headers=_as(tenant, key))
    assert (replay.status_code, replay.json()) == (200, first.json())
    conflict = await payments.post(path, json={"amountCents": 500}, headers=_as(tenant, key))
    assert (conflict.status_code, _code(conflict)) == (409, "idempotency_conflict")

    too_much = await payments.post(path, json={"amountCents": 401}, headers=_as(tenant, _key()))
    assert (too_much.status_code, _code(too_much)) == (409, "refund_exceeds_charge")
    rest = await payments.post(path, headers=_as(tenant, _key()))  # no amount: what is left
    assert (rest.status_code, rest.json()["amountCents"]) == (201, 400)
    nothing_left = await payments.post(path, json={"amountCents": 1}, headers=_as(tenant, _key()))
    assert nothing_left.status_code == 409

    ledger = await _ledger(payments, tenant, "o-r")
    assert (ledger["refunds"]["count"], ledger["refunds"]["amountCents"]) == (2, 1000)
    charge = (await payments.get(f"/v1/charges/{charge_id}", headers=_as(tenant))).json()
    assert charge["refundedCents"] == 1000


async def test_concurrent_refunds_never_exceed_the_charge(
    payments: httpx.AsyncClient, tenant: str
) -> None:
    charge_id = await _captured(payments, tenant, "o-c", 1000)
    await _faults(payments, latency_ms=20, jitter_ms=50)
    answers = await asyncio.gather(
        *(
            payments.post(
                f"/v1/charges/{charge_id}/refunds",
                json={"amountCents": 300},
                headers=_as(tenant, _key()),
            )
            for _ in range(6)
        )
    )
    assert sorted(a.status_code for a in answers) == [201, 201, 201, 409, 409, 409]
    assert (await _ledger(payments, tenant, "o-c"))["refunds"]["amountCents"] == 900


async def test_only_a_captured_charge_is_refunded(payments: httpx.AsyncClient, tenant: str) -> None:
    await _faults(payments, decline_rate=1)
    declined = await payments.post(
        "/v1/charges", json=_charge(tenant, "o-x"), headers=_as(tenant, _key())
    )
    charge_id = declined.json()["charge"]["id"]
    await payments.delete("/_admin/faults")
    refused = await payments.post(f"/v1/charges/{charge_id}/refunds", headers=_as(tenant, _key()))
    assert (refused.status_code, _code(refused)) == (409, "charge_not_captured")
    unknown = await payments.post("/v1/charges/ch_nope/refunds", headers=_as(tenant, _key()))
    assert (unknown.status_code, _code(unknown)) == (404, "not_found")
    assert (await _ledger(payments, tenant, "o-x"))["refunds"]["count"] == 0


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({"X-Tenant-Id": "t"}, _charge("t", "o"), id="no idempotency key"),
        pytest.param({"Idempotency-Key": "k"}, _charge("t", "o"), id="no tenant header"),
        pytest.param(_as("t", "k"), _charge("u", "o"), id="body tenant is not the header's"),
        pytest.param(_as("t", "k"), _charge("t", "o", amount=0), id="zero amount"),
        pytest.param(_as("t", "k"), _charge("t", "o", currency="eur"), id="bad currency"),
        pytest.param(_as("t", "k"), _charge("t", "o", card="4242"), id="unknown field"),
    ],
)
async def test_a_malformed_charge_is_400_and_charges_nothing(
    payments: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> None:
    response = await payments.post("/v1/charges", json=body, headers=headers)
    assert (response.status_code, _code(response)) == (400, "bad_request")
    assert (await _by_key(payments, "t", "k")).status_code == 404


async def test_the_ledger_resets(payments_url: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=payments_url) as client:
        await _captured(client, tenant, "o-z", 100)
        assert (await client.delete("/_admin/ledger")).status_code == 200
        assert await _captures(client, tenant, "o-z") == 0


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"phase": "during"}, id="unknown phase"),
        pytest.param({"decline_rate": 1.5}, id="decline rate above 1"),
        pytest.param({"decline_code": "Card Declined"}, id="decline code not a word"),
        pytest.param({"decline_amount_cents": 0}, id="decline amount not positive"),
    ],
)
async def test_a_bad_phase_or_decline_config_is_refused(
    payments: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    refused = await payments.put("/_admin/faults", json=config)
    assert (refused.status_code, _code(refused)) == (400, "bad_request")
    assert (await payments.get("/_admin/faults")).json()["phase"] == "before"
