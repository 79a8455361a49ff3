"""The fake notification provider as a real process: each email or SMS sent once per key."""

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
def notify_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A notification stub of this module's own, without faults."""
    with running_stub("notifications", tmp_path_factory.mktemp("notifications")) as url:
        yield url


@pytest.fixture
async def notify(notify_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=notify_url, timeout=10) as client:
        yield client
        await client.delete("/_admin/faults")


def _as(tenant: str, key: str | None = None) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, **({"Idempotency-Key": key} if key is not None else {})}


def _email(**changes: Any) -> dict[str, Any]:
    body = {
        "channel": "email",
        "to": "ada@example.com",
        "subject": "Your order is paid",
        "body": "Order o-1: 25.00 EUR received.",
    }
    return {**body, **changes}


def _sms(**changes: Any) -> dict[str, Any]:
    return {"channel": "sms", "to": "+4915112345678", "body": "Order o-1 shipped.", **changes}


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def _sent(client: httpx.AsyncClient, tenant: str) -> list[dict[str, Any]]:
    response = await client.get("/_admin/messages", params={"tenant": tenant})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["items"])
    items: list[dict[str, Any]] = body["items"]
    return items


async def test_a_message_is_recorded_once_per_key(notify: httpx.AsyncClient, tenant: str) -> None:
    key = str(uuid.uuid4())
    first = await notify.post("/v1/messages", json=_email(), headers=_as(tenant, key))
    assert first.status_code == 201, first.text
    message = first.json()
    assert (message["channel"], message["to"], message["idempotencyKey"]) == (
        "email",
        "ada@example.com",
        key,
    )
    replay = await notify.post("/v1/messages", json=_email(), headers=_as(tenant, key))
    assert (replay.status_code, replay.json()) == (200, message)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert [m["id"] for m in await _sent(notify, tenant)] == [message["id"]]
    one = await notify.get(f"/v1/messages/{message['id']}", headers=_as(tenant))
    assert one.json() == message
    assert (
        await notify.get(f"/v1/messages/{message['id']}", headers=_as("other"))
    ).status_code == 404


async def test_the_same_key_for_another_message_is_a_conflict(
    notify: httpx.AsyncClient, tenant: str
) -> None:
    key = str(uuid.uuid4())
    await notify.post("/v1/messages", json=_email(), headers=_as(tenant, key))
    other = await notify.post("/v1/messages", json=_email(body="other"), headers=_as(tenant, key))
    assert (other.status_code, _code(other)) == (409, "idempotency_conflict")
    assert len(await _sent(notify, tenant)) == 1


async def test_concurrent_sends_with_one_key_send_one_message(
    notify: httpx.AsyncClient, tenant: str
) -> None:
    key = str(uuid.uuid4())
    await notify.put("/_admin/faults", json={"latency_ms": 30, "jitter_ms": 50})
    answers = await asyncio.gather(
        *(notify.post("/v1/messages", json=_sms(), headers=_as(tenant, key)) for _ in range(8))
    )
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len(await _sent(notify, tenant)) == 1


async def test_the_admin_list_filters_by_recipient(notify: httpx.AsyncClient, tenant: str) -> None:
    await notify.post("/v1/messages", json=_email(), headers=_as(tenant, "k-1"))
    await notify.post("/v1/messages", json=_sms(), headers=_as(tenant, "k-2"))
    response = await notify.get(
        "/_admin/messages", params={"tenant": tenant, "to": "+4915112345678"}
    )
    assert [m["channel"] for m in response.json()["items"]] == ["sms"]
    assert [m["channel"] for m in await _sent(notify, tenant)] == ["email", "sms"]


async def test_a_platform_user_is_a_recipient_on_either_channel(
    notify: httpx.AsyncClient, tenant: str
) -> None:
    to = f"user:{uuid.uuid4()}"
    email = await notify.post("/v1/messages", json=_email(to=to), headers=_as(tenant, "k-e"))
    sms = await notify.post("/v1/messages", json=_sms(to=to), headers=_as(tenant, "k-s"))
    assert (email.status_code, sms.status_code) == (201, 201), (email.text, sms.text)
    listed = await notify.get("/_admin/messages", params={"tenant": tenant, "to": to})
    assert [m["channel"] for m in listed.json()["items"]] == ["email", "sms"]


async def test_a_5xx_before_sends_nothing_and_a_5xx_after_sends_once(
    notify: httpx.AsyncClient, tenant: str
) -> None:
    await notify.put("/_admin/faults", json={"error_rate": 1})
    refused = await notify.post("/v1/messages", json=_email(), headers=_as(tenant, "k-b"))
    assert (refused.status_code, _code(refused)) == (503, "injected_fault")
    assert await _sent(notify, tenant) == []

    await notify.put("/_admin/faults", json={"error_rate": 1, "phase": "after"})
    lost = await notify.post("/v1/messages", json=_email(), headers=_as(tenant, "k-a"))
    assert lost.status_code == 503
    await notify.delete("/_admin/faults")
    retry = await notify.post("/v1/messages", json=_email(), headers=_as(tenant, "k-a"))
    assert retry.status_code == 200  # the retry finds the message the lost answer sent
    assert len(await _sent(notify, tenant)) == 1


async def test_injected_latency_delays_a_send(notify: httpx.AsyncClient, tenant: str) -> None:
    await notify.put("/_admin/faults", json={"latency_ms": 300})
    started = time.monotonic()
    assert (await notify.post("/v1/messages", json=_sms(), headers=_as(tenant, "k"))).is_success
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_email(channel="fax"), id="unknown channel"),
        pytest.param(_email(to="not-an-address"), id="email to a non-address"),
        pytest.param(_email(to="user:"), id="email to an empty user reference"),
        pytest.param(
            {k: v for k, v in _email().items() if k != "subject"}, id="email without subject"
        ),
        pytest.param(_sms(to="015112345678"), id="sms to a non-E.164 number"),
        pytest.param(_sms(subject="Hi"), id="sms with a subject"),
        pytest.param(_sms(body="x" * 1601), id="sms too long"),
        pytest.param(_email(cc="bob@example.com"), id="unknown field"),
    ],
)
async def test_a_malformed_message_is_400_and_sends_nothing(
    notify: httpx.AsyncClient, tenant: str, body: dict[str, Any]
) -> None:
    response = await notify.post("/v1/messages", json=body, headers=_as(tenant, "k"))
    assert (response.status_code, _code(response)) == (400, "bad_request")
    assert await _sent(notify, tenant) == []


async def test_a_message_needs_a_key_and_the_list_resets(
    notify: httpx.AsyncClient, tenant: str
) -> None:
    keyless = await notify.post("/v1/messages", json=_email(), headers=_as(tenant))
    assert (keyless.status_code, _code(keyless)) == (400, "bad_request")
    await notify.post("/v1/messages", json=_email(), headers=_as(tenant, "k"))
    assert (await notify.delete("/_admin/messages")).status_code == 200
    assert await _sent(notify, tenant) == []
