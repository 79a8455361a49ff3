"""The reconciler: settles charges whose outcome the pipeline does not know.

Every `interval_s` it takes a batch of payments that are `unknown` (the provider's
answer was lost: a timeout, a 5xx after the client's retries) or still `pending`
past a grace period (the worker died between writing the row and hearing from
the provider, and no redelivery resumed it), and asks the provider what became of
each payment's key. It never charges: a capture found is settled as captured, a
decline as declined, and a key the provider never saw fails the payment and the
order. Batches are taken with SKIP LOCKED and stamped, so any number of pipelines
reconcile side by side and each payment is asked about by one of them at a time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import errors
from services.kit.backoff import pause
from services.order.pipeline import payments
from services.order.pipeline.provider import PaymentProvider, ProviderRefused, Settled
from services.order.pipeline.steps import Pipeline

log = logging.getLogger("shop.order.reconciler")


@dataclass(frozen=True)
class ReconcilerConfig:
    interval_s: float = 2.0
    # Longer than the pipeline's visibility timeout, so that a redelivery resumes a
    # charge whose worker died before the reconciler gives up on it.
    pending_grace_s: float = 60.0
    # How long an `unknown` payment rests between two lookups.
    unknown_after_s: float = 1.0
    batch: int = 50


class Reconciler:
    def __init__(
        self,
        engine: AsyncEngine,
        provider: PaymentProvider,
        pipeline: Pipeline,
        config: ReconcilerConfig,
    ) -> None:
        self._engine = engine
        self._provider = provider
        self._pipeline = pipeline
        self.config = config

    async def reconcile_once(self) -> int:
        """One batch; how many payments it settled."""
        async with self._engine.begin() as conn:
            claimed = await payments.claim_unsettled(
                conn,
                pending_grace_s=self.config.pending_grace_s,
                unknown_after_s=self.config.unknown_after_s,
                limit=self.config.batch,
            )
        settled = 0
        for payment in claimed:
            try:
                outcome = await self._provider.find(payment.tenant_id, payment.id)
            except (errors.Unavailable, errors.DeadlineExceeded, ProviderRefused) as exc:
                log.info(
                    "payment lookup failed", extra={"payment": str(payment.id), "error": str(exc)}
                )
                continue
            if outcome.settled is Settled.UNKNOWN:
                continue
            await self._pipeline.settle(payment, outcome)
            settled += 1
        return settled

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except Exception:  # a failing database: try again next round
                log.exception("reconciliation failed")
            await pause(stop, self.config.interval_s)
