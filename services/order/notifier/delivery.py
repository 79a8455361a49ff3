"""The notifier's loop: claim due notifications, send each once, record the outcome.

Each round claims up to a batch of due rows in one short transaction
(`notification_store.claim_due`: SKIP LOCKED, the attempt counted, a lease),
sends them side by side through the kit's resilient client to the notification
provider, then writes each outcome in a transaction of its own. The
notification id is the send's `Idempotency-Key`: a second send of one
notification (a retry after a lost answer, or the next claim after a notifier
died mid-send) is a replay at the provider, not a second message. So a
notification is delivered at least once by the platform and exactly once to
the customer.

A send that fails (provider unavailable, timed out, breaker open) is due again
after a full-jitter backoff; a refusal (4xx: the provider will never take this
message) or the last allowed attempt gives up as `failed`. The notifier runs
in its own process on its own connection pool: nothing in the order pipeline
waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors, metrics
from services.kit.backoff import full_jitter, pause
from services.kit.upstream import Upstream
from services.order import notification_store
from services.order.notices import Notification
from services.order.notifier.config import DeliveryConfig

log = logging.getLogger("shop.notifier")

SENT, RETRY, FAILED = "sent", "retry", "failed"


@dataclass(frozen=True)
class Outcome:
    """What one send came to: `sent`, `retry` (transient) or `failed` (refused)."""

    kind: str
    error: str = ""


def message_of(notification: Notification) -> dict[str, Any]:
    """The provider's request body for a notification (an SMS has no subject)."""
    body: dict[str, Any] = {
        "channel": notification.channel,
        "to": notification.recipient,
        "body": notification.body,
    }
    if notification.channel == "email":
        body["subject"] = notification.subject
    return body


def settle(outcome: Outcome, attempts: int, config: DeliveryConfig) -> str:
    """The row's next state after a send: sent, retry, or failed once attempts run out."""
    if outcome.kind == RETRY and attempts >= config.max_attempts:
        return FAILED
    return outcome.kind


class Notifier:
    """Delivers due notifications from one database through one provider."""

    def __init__(
        self,
        engine: AsyncEngine,
        provider: Upstream,
        config: DeliveryConfig,
        *,
        name: str = "notifier",
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._engine = engine
        self._provider = provider
        self.config = config
        self._rng = rng or random.Random()

    async def deliver_once(self) -> int:
        """One round: claim a batch, send it, record the outcomes; how many were claimed."""
        async with self._engine.begin() as conn:
            claimed = await notification_store.claim_due(
                conn, self.config.batch, timedelta(seconds=self.config.lease_s)
            )
        # Every send settles before the round's outcomes are recorded, in one
        # transaction (the sent ones in one statement); a send that raised leaves its
        # row to the next claim after the lease.
        sent = await asyncio.gather(*(self.send(n) for n in claimed), return_exceptions=True)
        await self._record(claimed, sent)
        for failure in sent:
            if isinstance(failure, BaseException):
                raise failure
        return len(claimed)

    async def _record(
        self, claimed: list[Notification], outcomes: list[Outcome | BaseException]
    ) -> None:
        states = [
            (n, o, settle(o, n.attempts, self.config))
            for n, o in zip(claimed, outcomes, strict=True)
            if not isinstance(o, BaseException)
        ]
        async with self._engine.begin() as conn:
            await notification_store.mark_sent(conn, [n.id for n, _, st in states if st == SENT])
            for notification, outcome, state in states:
                if state == RETRY:
                    delay = self.backoff(notification.attempts)
                    await notification_store.mark_retry(conn, notification, delay, outcome.error)
                elif state != SENT:
                    await notification_store.mark_failed(conn, notification, outcome.error)
        for notification, outcome, state in states:
            metrics.NOTIFICATIONS_SENT.labels(notification.channel, state).inc()
            if state != SENT:
                log.warning(
                    "notification not sent",
                    extra={
                        "notifier": self.name,
                        "notification": str(notification.id),
                        "attempt": notification.attempts,
                        "outcome": state,
                        "reason": outcome.error,
                    },
                )

    async def send(self, notification: Notification) -> Outcome:
        """One send to the provider, keyed by the notification id."""
        try:
            response = await self._provider.request(
                "POST",
                "/v1/messages",
                json=message_of(notification),
                headers={
                    "Idempotency-Key": str(notification.id),
                    "X-Tenant-Id": notification.tenant_id,
                },
                idempotent=True,  # the key makes a resend a replay
            )
        except errors.PlatformError as exc:  # unavailable, timed out, breaker open
            return Outcome(RETRY, str(exc))
        if response.is_success:
            return Outcome(SENT)
        return Outcome(FAILED, f"HTTP {response.status_code}: {response.text}")

    def backoff(self, attempts: int) -> timedelta:
        """How long a row waits after its `attempts`-th failed send."""
        seconds = full_jitter(
            self._rng,
            attempts - 1,
            base_s=self.config.retry_base_s,
            cap_s=self.config.retry_cap_s,
        )
        return timedelta(seconds=seconds)

    async def sample_lag(self) -> None:
        """The oldest due notification's age into `shop_notifications_lag_seconds`."""
        async with db.reads(self._engine).connect() as conn:
            metrics.NOTIFICATIONS_LAG.set(await notification_store.due_lag_seconds(conn))

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, finishing the round in flight; a failing
        database is retried with backoff."""
        unwatch = metrics.on_scrape(self.sample_lag)
        try:
            await self._loop(stop)
        finally:
            unwatch()

    async def _loop(self, stop: asyncio.Event) -> None:
        failures = 0
        poll_s = self.config.poll_ms / 1000
        while not stop.is_set():
            try:
                claimed = await self.deliver_once()
            except (SQLAlchemyError, OSError) as exc:
                wait_s = full_jitter(
                    self._rng, failures, base_s=poll_s, cap_s=self.config.db_retry_cap_s
                )
                failures += 1
                log.warning(
                    "notifier round failed; retrying",
                    extra={
                        "notifier": self.name,
                        "error": type(exc).__name__,
                        "retry_in_s": round(wait_s, 3),
                    },
                )
                await pause(stop, wait_s)
                continue
            failures = 0
            if claimed < self.config.batch:
                await pause(stop, poll_s)
