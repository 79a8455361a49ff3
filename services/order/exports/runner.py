"""Writing one export job: chunk by chunk, each with its checkpoint in one transaction.

A job reads its orders by the (created_at, id) keyset. Each chunk's CSV, the
job's `rows_done` and its `position` (the last order written) commit
together, and the next chunk starts from the stored position; so a worker
killed anywhere leaves either the whole chunk or none of it, and the worker
that takes the message over (the queue kit reclaims it after the visibility
timeout) continues without writing any order twice or skipping one. Each
chunk locks the job's row, so two deliveries of one job never write the same
chunk.

The job throttles itself: short transactions that lock only its own row
(orders are read, never locked), a pause between chunks, and after a time
slice it yields its handler slot (`Defer`, spending no attempt) and continues
from its checkpoint when the message comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from google.protobuf import json_format
from shop.order.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.streams import Defer, Message, Permanent
from services.kit.streams.message import describe_error
from services.kit.uow import UnitOfWork
from services.order import report_repository as repository
from services.order.exports.config import ExportSettings
from services.order.sales import ExportJob, csv_chunk

log = logging.getLogger("shop.exports")


def requested_job(message: Message) -> tuple[str, uuid.UUID]:
    """The tenant and job a `reports.export_requested` message names; Permanent if none."""
    try:
        event = json_format.Parse(message.payload, events_pb2.ReportExportRequested())
        job_id = uuid.UUID(event.job_id)
    except (json_format.ParseError, ValueError) as exc:
        raise Permanent(f"not a report export request: {exc}") from None
    if not event.tenant_id or event.tenant_id != message.tenant:
        raise Permanent("the request's tenant is not the message's")
    return event.tenant_id, job_id


class ExportRunner:
    """The handler of `reports.export_requested`: writes the job's CSV."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: ExportSettings,
        max_attempts: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._max_attempts = max_attempts
        self._clock = clock

    async def __call__(self, message: Message) -> None:
        tenant, job_id = requested_job(message)
        try:
            await self._run(tenant, job_id)
        except (Defer, Permanent):
            raise
        except Exception as exc:
            # The last attempt: the job is failed, not left running for ever.
            if message.attempt + 1 >= self._max_attempts:
                await self._fail(tenant, job_id, describe_error(exc))
            raise

    async def _run(self, tenant: str, job_id: uuid.UUID) -> None:
        if not await self._start(tenant, job_id):
            return
        yield_at = self._clock() + self._settings.slice_s
        while not await self._chunk(tenant, job_id):
            if self._clock() >= yield_at:
                raise Defer(0.0, "export continues from its checkpoint")
            await asyncio.sleep(self._settings.pause_s)

    async def _start(self, tenant: str, job_id: uuid.UUID) -> bool:
        """Mark a queued job running with its row count; False when it is already finished."""
        async with UnitOfWork(self._engine) as work:
            job = await repository.get_job(work.conn, tenant, job_id, lock=True)
            if job is None:
                raise Permanent(f"no export job {job_id} in tenant {tenant}")
            if job.finished:
                return False
            if job.status == "queued":
                total = await repository.count_rows(work.conn, job)
                await repository.start(work.conn, job.id, total)
                log.info("export started", extra=_fields(job, rows_total=total))
            return True

    async def _chunk(self, tenant: str, job_id: uuid.UUID) -> bool:
        """Write the next chunk from the stored position; True once the job is done."""
        async with UnitOfWork(self._engine) as work:
            job = await repository.get_job(work.conn, tenant, job_id, lock=True)
            if job is None or job.finished:
                return True
            rows = await repository.next_rows(work.conn, job, self._settings.chunk_rows)
            if rows:
                await repository.add_chunk(
                    work.conn, job, csv_chunk(rows), len(rows), rows[-1].position
                )
            if len(rows) < self._settings.chunk_rows:
                await repository.finish(work.conn, job.id)
                log.info("export done", extra=_fields(job, rows_done=job.rows_done + len(rows)))
                return True
            return False

    async def _fail(self, tenant: str, job_id: uuid.UUID, error: str) -> None:
        try:
            async with UnitOfWork(self._engine) as work:
                job = await repository.get_job(work.conn, tenant, job_id, lock=True)
                if job is not None and not job.finished:
                    await repository.fail(work.conn, job.id, error)
                    log.error("export failed", extra=_fields(job, error=error))
        except Exception:
            log.exception("could not mark the export failed", extra={"job_id": str(job_id)})


def _fields(job: ExportJob, **extra: object) -> dict[str, object]:
    return {"job_id": str(job.id), "tenant": job.tenant_id, **extra}
