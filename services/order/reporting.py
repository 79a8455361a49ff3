"""Report use cases: the daily sales report and the CSV export jobs of an admin's tenant.

The report reads one read-only REPEATABLE READ snapshot: every figure comes
from the same instant and no order row is locked, so checkout never waits
on a report. An export is a job row plus its `reports.export_requested`
event in one transaction; the export worker (`services.order.exports`) does
the writing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from shop.order.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors
from services.kit.idempotency import IdempotencyStore, KeyScope, validate_key
from services.kit.outbox import Event
from services.kit.uow import Claim, Stored, UnitOfWork
from services.order import report_repository as repository
from services.order.domain import Caller
from services.order.sales import DailyReport, DayRange, ExportJob, csv_document, report

EXPORT_AGGREGATE = "report_export"
EXPORT_REQUESTED = "reports.export_requested"
# A replayed key answers the job it created, as it is now.
STORED_JOB_ID: Stored[uuid.UUID] = Stored(
    lambda job_id: {"id": str(job_id)}, lambda stored: uuid.UUID(stored["id"])
)


class ExportNotFound(errors.NotFound):
    def __init__(self) -> None:
        super().__init__("export not found")


def export_requested(job: ExportJob) -> Event:
    """The `reports.export_requested` event of a new job."""
    contract = events_pb2.ReportExportRequested(job_id=str(job.id), tenant_id=job.tenant_id)
    return Event(EXPORT_AGGREGATE, str(job.id), job.tenant_id, EXPORT_REQUESTED, contract)


def _admin(caller: Caller) -> str:
    """The admin's tenant: reports are tenant-wide, so for admins only."""
    if not caller.tenant_wide:
        raise errors.PermissionDenied("reports are for admins")
    return caller.tenant


@dataclass(frozen=True)
class Requested:
    job: ExportJob
    replayed: bool


class Reports:
    """The report use cases over one database."""

    def __init__(
        self,
        engine: AsyncEngine,
        idempotency: IdempotencyStore,
        *,
        statement_timeout_ms: int = 15_000,
    ) -> None:
        self._engine = engine
        self._idempotency = idempotency
        self._statement_timeout_ms = statement_timeout_ms

    async def daily(self, caller: Caller, span: DayRange) -> DailyReport:
        """Per UTC day of the range: orders, revenue, average order, statuses, best sellers."""
        tenant = _admin(caller)
        async with repository.snapshot(self._engine, self._statement_timeout_ms) as conn:
            counts = await repository.status_counts(conn, tenant, span)
            by_day, overall = await repository.top_products(conn, tenant, span)
        return report(span, counts, by_day, overall)

    async def request_export(
        self, caller: Caller, span: DayRange, key: str | None, request_hash: str
    ) -> Requested:
        """A queued job and its event in one transaction; with `key`, a retry answers
        the job the first request created."""
        tenant = _admin(caller)
        if key is not None:
            validate_key(key)
        async with UnitOfWork(self._engine, self._idempotency) as work:

            async def queue() -> uuid.UUID:
                job = await repository.insert_job(work.conn, tenant, caller.user, span)
                await work.outbox.add(export_requested(job))
                return job.id

            if key is None:
                job_id, replayed = await queue(), False
            else:
                claim = Claim(KeyScope(tenant, caller.user), key, "reports.export", request_hash)
                done = await work.idempotent(claim, queue, STORED_JOB_ID)
                job_id, replayed = done.value, done.replayed
            job = await repository.get_job(work.conn, tenant, job_id)
        if job is None:
            raise ExportNotFound()
        return Requested(job, replayed)

    async def export(self, caller: Caller, job_id: uuid.UUID) -> ExportJob:
        """The tenant's job, with its CSV once done."""
        tenant = _admin(caller)
        async with db.reads(self._engine).connect() as conn:
            job = await repository.get_job(conn, tenant, job_id)
            if job is None:
                raise ExportNotFound()
            if job.status != "done":
                return job
            return replace(job, csv=csv_document(await repository.chunks(conn, job.id)))

    async def csv(self, caller: Caller, job_id: uuid.UUID) -> str:
        """A finished job's CSV; InvalidTransition (409) while it is not done."""
        job = await self.export(caller, job_id)
        if job.csv is None:
            raise errors.InvalidTransition(
                f"the export is {job.status}: its CSV exists once it is done",
                metadata={"status": job.status},
            )
        return job.csv
