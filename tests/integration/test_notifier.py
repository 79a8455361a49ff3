"""The notifier against the session's PostgreSQL and a notification stub of its own:
notifier processes racing each other and killed mid-send, and the delivery loop
in-process for retries and giving up.

Each test writes the notifications of a tenant of its own and reads the stub's
message log for that tenant. Notifiers deliver every due row in the database, so
a test waits for its own rows, never for "nothing pending".
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.upstream import Upstream, UpstreamPolicy
from services.launcher import PYTHONPATH, infra, procs
from services.launcher.platform import start_service
from services.order.notifier.config import DeliveryConfig
from services.order.notifier.delivery import Notifier
from services.order.schema import notifications
from tests import scrapes
from tests.upstream_admin import StubAdmin, running_stub

USER = "5f0c1a8e-0000-4000-8000-00000000a001"


@pytest.fixture(scope="module")
def notify_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A notification stub of this module's own, without faults."""
    with running_stub("notifications", tmp_path_factory.mktemp("notify")) as url:
        yield url


@pytest.fixture
def stub(notify_url: str) -> Iterator[StubAdmin]:
    admin = StubAdmin(notify_url)
    admin.clear()
    yield admin
    admin.clear()


def sent_messages(stub: StubAdmin, tenant: str) -> list[dict[str, Any]]:
    """What the stub sent for the tenant, oldest first."""
    response = httpx.get(f"{stub.url}/_admin/messages", params={"tenant": tenant})
    items: list[dict[str, Any]] = response.raise_for_status().json()["items"]
    return items


async def add_pending(
    engine: AsyncEngine, tenant: str, count: int, *, channel: str = "email", body: str = ""
) -> list[uuid.UUID]:
    """`count` pending notifications of USER in the tenant, due now."""
    ids = [uuid.uuid4() for _ in range(count)]
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(notifications),
            [
                {
                    "id": i,
                    "tenant_id": tenant,
                    "user_id": USER,
                    "order_id": uuid.uuid4(),
                    "kind": "order.paid",
                    "channel": channel,
                    "subject": f"Order {n} paid",
                    "body": body or f"Your payment for order {n} went through.",
                    "status": "pending",
                }
                for n, i in enumerate(ids)
            ],
        )
    return ids


async def rows(engine: AsyncEngine, ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    async with engine.connect() as conn:
        found = await conn.execute(sa.select(notifications).where(notifications.c.id.in_(ids)))
        return {r.id: r for r in found}


async def until(
    check: Callable[[], Awaitable[bool]], what: str, within_s: float = 30, step: float = 0.05
) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(step)


async def all_in(engine: AsyncEngine, ids: list[uuid.UUID], status: str) -> bool:
    return all(r.status == status for r in (await rows(engine, ids)).values())


# --- notifier processes ---------------------------------------------------------------


class Notifiers:
    """Notifier processes on the session's database and the module's stub."""

    def __init__(self, database_url: str, notify_url: str, run_dir: Path, stack: ExitStack):
        self.database_url, self.notify_url = database_url, notify_url
        self.run_dir, self.stack = run_dir, stack
        self.metrics: dict[str, str] = {}

    def start(self, name: str, **settings: str) -> procs.Proc:
        target = f"{infra.HOST}:{procs.free_port()}"
        metrics = f"{infra.HOST}:{procs.free_port()}"
        env = {
            **os.environ,
            "PYTHONPATH": PYTHONPATH,
            "DATABASE_URL": self.database_url,
            "NOTIFY_URL": self.notify_url,
            "NOTIFIER_GRPC_BIND": target,
            "NOTIFIER_METRICS_BIND": metrics,
            "NOTIFIER_NAME": name,
            "NOTIFIER_POLL_MS": "50",
            **settings,
        }
        proc = start_service(name, "", target, env, self.run_dir, module="services.order.notifier")
        self.stack.callback(lambda: proc.popen.poll() is None and procs.stop(proc))
        self.metrics[name] = f"http://{metrics}/metrics"
        return proc

    def sent_by(self, name: str) -> float:
        samples = scrapes.scrape(self.metrics[name])
        return scrapes.value(
            samples, "shop_notifications_sent_total", {"channel": "email", "outcome": "sent"}
        )


@pytest.fixture
def notifiers(postgres_url: str, notify_url: str, tmp_path: Path) -> Iterator[Notifiers]:
    with ExitStack() as stack:
        yield Notifiers(postgres_url, notify_url, tmp_path, stack)


async def test_two_notifiers_deliver_each_of_200_notifications_exactly_once(
    engine: AsyncEngine, notifiers: Notifiers, stub: StubAdmin, tenant: str
) -> None:
    for name in ("notifier-a", "notifier-b"):
        notifiers.start(name, NOTIFIER_BATCH="8")
    ids = await add_pending(engine, tenant, 200)
    await until(lambda: all_in(engine, ids, "sent"), "every notification to be sent")
    stored = await rows(engine, ids)
    # One claim each: SKIP LOCKED never gave a row to both notifiers.
    assert {r.attempts for r in stored.values()} == {1}
    assert all(r.sent_at is not None and r.last_error is None for r in stored.values())
    messages = sent_messages(stub, tenant)
    assert sorted(m["idempotencyKey"] for m in messages) == sorted(str(i) for i in ids)
    assert {m["to"] for m in messages} == {f"user:{USER}"}
    # Both took part (each delivered some of them).
    assert notifiers.sent_by("notifier-a") > 0
    assert notifiers.sent_by("notifier-b") > 0


async def test_a_notifier_killed_after_claiming_is_taken_over_after_its_lease(
    engine: AsyncEngine, notifiers: Notifiers, stub: StubAdmin, tenant: str
) -> None:
    # Sends to this tenant hang, so the first notifier is mid-send when it dies.
    stub.faults(latency_ms=8000, tenant=tenant)
    lease = {"NOTIFIER_LEASE_S": "4", "NOTIFY_DEADLINE_S": "3", "NOTIFY_ATTEMPT_TIMEOUT_S": "3"}
    first = notifiers.start("notifier-killed", **lease)
    (row,) = await add_pending(engine, tenant, 1)

    async def claimed() -> bool:
        return (await rows(engine, [row]))[row].attempts == 1

    await until(claimed, "the first notifier to claim the row", step=0.01)
    claimed_at = time.monotonic()
    os.kill(first.pid, signal.SIGKILL)
    first.popen.wait(timeout=10)
    lease_end = (await rows(engine, [row]))[row].next_attempt_at
    stub.clear()

    notifiers.start("notifier-survivor", **lease)
    await until(lambda: all_in(engine, [row], "sent"), "the survivor to send it")
    stored = (await rows(engine, [row]))[row]
    assert stored.attempts == 2
    assert stored.sent_at >= lease_end  # not taken over while the lease ran
    # The killed notifier's send may still land at the stub once its latency is over:
    # it carries the same key, so the customer gets one message either way.
    await asyncio.sleep(max(0.0, claimed_at + 8.5 - time.monotonic()))
    assert [m["idempotencyKey"] for m in sent_messages(stub, tenant)] == [str(row)]


# --- the delivery loop in-process -----------------------------------------------------

FAST = DeliveryConfig(batch=50, lease_s=10, max_attempts=3, retry_base_s=0.05, retry_cap_s=0.1)


@pytest.fixture
async def provider(notify_url: str) -> AsyncIterator[Upstream]:
    """The stub through the kit's client: one try per send (the loop retries), a breaker
    that recovers within a test."""
    policy = UpstreamPolicy(max_attempts=1, attempt_timeout_s=2, deadline_s=3, reset_timeout_s=0.1)
    upstream = Upstream("notifications", notify_url, policy)
    yield upstream
    await upstream.aclose()


async def run_until(
    notifier: Notifier, check: Callable[[], Awaitable[bool]], what: str, within_s: float = 20
) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if not await notifier.deliver_once():
            await asyncio.sleep(0.02)


async def test_a_failing_provider_is_retried_and_the_notification_sent_once(
    engine: AsyncEngine, provider: Upstream, stub: StubAdmin, tenant: str
) -> None:
    notifier = Notifier(engine, provider, FAST)
    # The provider sends the message, then its answer is lost (503): a resend must
    # find the message, not send a second one.
    stub.faults(error_rate=1, phase="after", tenant=tenant)
    (row,) = await add_pending(engine, tenant, 1)

    async def failed_once() -> bool:
        stored = (await rows(engine, [row]))[row]
        return stored.attempts >= 1 and stored.last_error is not None

    await run_until(notifier, failed_once, "a failed send")
    stored = (await rows(engine, [row]))[row]
    assert (stored.status, stored.sent_at) == ("pending", None)
    assert "unavailable" in stored.last_error
    assert stored.next_attempt_at > datetime.now(UTC) - timedelta(seconds=1)

    stub.clear()
    await run_until(notifier, lambda: all_in(engine, [row], "sent"), "the retry to send it")
    stored = (await rows(engine, [row]))[row]
    assert stored.attempts == 2
    assert stored.last_error is None
    assert [m["idempotencyKey"] for m in sent_messages(stub, tenant)] == [str(row)]


async def test_a_notification_is_failed_after_its_last_attempt(
    engine: AsyncEngine, provider: Upstream, stub: StubAdmin, tenant: str
) -> None:
    notifier = Notifier(engine, provider, FAST)
    stub.faults(error_rate=1, tenant=tenant)
    (row,) = await add_pending(engine, tenant, 1)
    await run_until(notifier, lambda: all_in(engine, [row], "failed"), "the notifier to give up")
    stored = (await rows(engine, [row]))[row]
    assert (stored.attempts, stored.sent_at) == (FAST.max_attempts, None)
    assert stored.last_error
    assert sent_messages(stub, tenant) == []


async def test_a_message_the_provider_refuses_is_failed_without_retrying(
    engine: AsyncEngine, provider: Upstream, stub: StubAdmin, tenant: str
) -> None:
    notifier = Notifier(engine, provider, FAST)
    (row,) = await add_pending(engine, tenant, 1, channel="sms", body="x" * 1601)
    await run_until(notifier, lambda: all_in(engine, [row], "failed"), "the refusal")
    stored = (await rows(engine, [row]))[row]
    assert stored.attempts == 1
    assert stored.last_error.startswith("HTTP 400")
    assert sent_messages(stub, tenant) == []


async def test_an_sms_goes_without_a_subject(
    engine: AsyncEngine, provider: Upstream, stub: StubAdmin, tenant: str
) -> None:
    notifier = Notifier(engine, provider, FAST)
    (row,) = await add_pending(engine, tenant, 1, channel="sms", body="Order shipped.")
    await run_until(notifier, lambda: all_in(engine, [row], "sent"), "the sms")
    (message,) = sent_messages(stub, tenant)
    assert (message["channel"], message["subject"], message["body"]) == (
        "sms",
        None,
        "Order shipped.",
    )


async def test_rows_not_yet_due_are_left_alone(
    engine: AsyncEngine, provider: Upstream, stub: StubAdmin, tenant: str
) -> None:
    (row,) = await add_pending(engine, tenant, 1)
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(notifications)
            .where(notifications.c.id == row)
            .values(next_attempt_at=sa.func.now() + timedelta(minutes=5))
        )
    notifier = Notifier(engine, provider, FAST)
    while await notifier.deliver_once():
        pass
    stored = (await rows(engine, [row]))[row]
    assert (stored.status, stored.attempts) == ("pending", 0)
    assert sent_messages(stub, tenant) == []
