"""CSV export jobs on real PostgreSQL and Redis: the job and its event in one transaction,
the worker's chunks and checkpoints, and a worker killed mid-job taken over by another."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import errors
from services.kit.idempotency import IdempotencyStore
from services.kit.outbox import outbox
from services.kit.streams import Defer, Message, Permanent, Queue
from services.launcher import PYTHONPATH, ROOT
from services.order import report_repository
from services.order.domain import Caller
from services.order.exports.__main__ import routes
from services.order.exports.config import ExportSettings, ExportWorkerConfig
from services.order.exports.runner import ExportRunner
from services.order.reporting import EXPORT_AGGREGATE, EXPORT_REQUESTED, Reports
from services.order.sales import CSV_HEADER, DayRange, ExportJob
from services.order.schema import report_exports
from tests import reports_data
from tests.reports_data import MARCH_1, MARCH_3, OUTSIDE, Placed, utc

MARCH = DayRange.parse("2026-03-01", "2026-03-03")


def admin(tenant: str) -> Caller:
    return Caller(tenant, "admin-1", tenant_wide=True)


async def _message(engine: AsyncEngine, job: ExportJob) -> Message:
    """The job's event as the relay publishes it: its outbox row on the queue."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(outbox).where(
                    outbox.c.aggregate_type == EXPORT_AGGREGATE,
                    outbox.c.aggregate_id == str(job.id),
                )
            )
        ).one()
    payload = json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()
    return Message(id=str(row.id), tenant=row.tenant_id, type=row.event_type, payload=payload)


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _expected(placed: list[Placed]) -> list[str]:
    """Order ids in the export's order: (created_at, id)."""
    return [str(p.id) for p in sorted(placed, key=lambda p: (p.at, p.id))]


async def test_a_request_queues_the_job_with_its_event(engine: AsyncEngine, tenant: str) -> None:
    requested = await Reports(engine, IdempotencyStore()).request_export(
        admin(tenant), MARCH, None, "h"
    )
    job = requested.job
    assert (job.status, job.rows_done, job.rows_total, job.tenant_id) == ("queued", 0, None, tenant)
    message = await _message(engine, job)
    assert message.type == EXPORT_REQUESTED
    assert json.loads(message.payload) == {"jobId": str(job.id), "tenantId": tenant}
    assert routes(ExportRunner(engine, ExportSettings(), 5)).handler_for(EXPORT_REQUESTED)


async def test_the_same_idempotency_key_answers_the_same_job(
    engine: AsyncEngine, tenant: str
) -> None:
    reports = Reports(engine, IdempotencyStore())
    first = await reports.request_export(admin(tenant), MARCH, "k-1", "h")
    again = await reports.request_export(admin(tenant), MARCH, "k-1", "h")
    other = await reports.request_export(admin(tenant), MARCH, "k-2", "h")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.job.id == first.job.id != other.job.id
    with pytest.raises(errors.IdempotencyKeyReused):
        await reports.request_export(admin(tenant), MARCH, "k-1", "another body")
    async with engine.connect() as conn:
        jobs = await conn.execute(
            sa.select(sa.func.count()).where(report_exports.c.tenant_id == tenant)
        )
        events = await conn.execute(
            sa.select(sa.func.count()).where(
                outbox.c.aggregate_type == EXPORT_AGGREGATE, outbox.c.tenant_id == tenant
            )
        )
        assert (jobs.scalar_one(), events.scalar_one()) == (2, 2)


async def test_a_job_goes_queued_running_done_with_the_ranges_orders(
    engine: AsyncEngine, tenant: str
) -> None:
    inside = await reports_data.insert(engine, tenant, MARCH_1 + MARCH_3)
    await reports_data.insert(engine, tenant, OUTSIDE)
    await reports_data.insert(engine, f"{tenant}-other", MARCH_1)
    # A customer id CSV must quote: a comma, a quote and a line break.
    odd = await reports_data.insert(
        engine,
        tenant,
        [Placed(utc("2026-03-02T08:00:00"), "paid", 10, user_id='u,"odd"\nname')],
    )
    reports = Reports(engine, IdempotencyStore())
    job = (await reports.request_export(admin(tenant), MARCH, None, "h")).job
    message = await _message(engine, job)
    # Chunks of 3, and a slice so short that the job yields after every chunk.
    runner = ExportRunner(engine, ExportSettings(chunk_rows=3, pause_s=0, slice_s=1e-9), 5)

    with pytest.raises(Defer):
        await runner(message)
    running = await reports.export(admin(tenant), job.id)
    assert (running.status, running.rows_done, running.rows_total) == ("running", 3, 10)
    assert running.csv is None
    with pytest.raises(errors.InvalidTransition):
        await reports.csv(admin(tenant), job.id)

    for _ in range(5):
        try:
            await runner(message)
            break
        except Defer:
            continue
    done = await reports.export(admin(tenant), job.id)
    assert (done.status, done.rows_done, done.rows_total) == ("done", 10, 10)
    assert done.finished_at is not None
    assert done.csv is not None
    rows = _rows(done.csv)
    assert tuple(rows[0]) == CSV_HEADER
    assert [r[0] for r in rows[1:]] == _expected(inside + odd)
    by_id = {r[0]: r for r in rows[1:]}
    assert by_id[str(odd[0].id)][3] == 'u,"odd"\nname'
    first = by_id[str(inside[0].id)]
    assert first[1:] == ["2026-03-01T00:00:00Z", "paid", "u-1", "1000", "2", "3"]
    draft = by_id[str(inside[4].id)]
    assert draft[2:] == ["draft", "u-1", "", "0", "0"]
    assert await reports.csv(admin(tenant), job.id) == done.csv

    # A redelivery of a finished job changes nothing.
    await runner(message)
    assert await reports.export(admin(tenant), job.id) == done


async def test_an_export_is_the_tenants_own(engine: AsyncEngine, tenant: str) -> None:
    reports = Reports(engine, IdempotencyStore())
    job = (await reports.request_export(admin(tenant), MARCH, None, "h")).job
    with pytest.raises(errors.NotFound):
        await reports.export(admin(f"{tenant}-other"), job.id)
    with pytest.raises(errors.PermissionDenied):
        await reports.export(Caller(tenant, "c-1", tenant_wide=False), job.id)


async def test_a_message_naming_no_job_is_dead_lettered(engine: AsyncEngine, tenant: str) -> None:
    runner = ExportRunner(engine, ExportSettings(), 5)
    missing = json.dumps({"jobId": str(uuid.uuid4()), "tenantId": tenant}).encode()
    with pytest.raises(Permanent):
        await runner(Message(id="m-1", tenant=tenant, type=EXPORT_REQUESTED, payload=missing))
    with pytest.raises(Permanent):
        await runner(Message(id="m-2", tenant=tenant, type=EXPORT_REQUESTED, payload=b"{"))


async def test_a_job_whose_last_attempt_fails_is_marked_failed(
    engine: AsyncEngine, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = Reports(engine, IdempotencyStore())
    job = (await reports.request_export(admin(tenant), MARCH, None, "h")).job
    message = await _message(engine, job)

    async def broken(*_: object) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(report_repository, "next_rows", broken)
    runner = ExportRunner(engine, ExportSettings(), max_attempts=2)
    with pytest.raises(RuntimeError):
        await runner(message)  # attempt 1 of 2: retried later, the job still running
    assert (await reports.export(admin(tenant), job.id)).status == "running"
    with pytest.raises(RuntimeError):
        await runner(dataclasses.replace(message, attempt=1))
    failed = await reports.export(admin(tenant), job.id)
    assert (failed.status, failed.error) == ("failed", "RuntimeError: the disk is full")
    assert failed.finished_at is not None
    with pytest.raises(errors.InvalidTransition):
        await reports.csv(admin(tenant), job.id)


def test_the_worker_settings_are_checked() -> None:
    base = {"DATABASE_URL": "postgresql://u:p@h/db", "REDIS_URL": "redis://h"}
    config = ExportWorkerConfig.from_env(base)
    assert (config.queue, config.worker.concurrency, config.export) == (
        "exports",
        2,
        ExportSettings(500, 0.05, 8.0),
    )
    with pytest.raises(ValueError, match="EXPORT_SLICE_S"):
        ExportWorkerConfig.from_env({**base, "EXPORT_SLICE_S": "30"})
    with pytest.raises(ValueError, match="EXPORT_CHUNK_ROWS"):
        ExportWorkerConfig.from_env({**base, "EXPORT_CHUNK_ROWS": "0"})


# --- a worker killed mid-job -----------------------------------------------------------------

ORDERS = 120
CHUNK = 5


def _worker(
    postgres_url: str, redis_url: str, queue: Queue, name: str, logs: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": PYTHONPATH,
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "EXPORT_QUEUE": queue.name,
        "EXPORT_WORKER_NAME": name,
        "EXPORT_WORKER_GRPC_BIND": "127.0.0.1:0",
        "EXPORT_CHUNK_ROWS": str(CHUNK),
        "EXPORT_PAUSE_S": "0.1",
        "EXPORT_SLICE_S": "1.5",
        "EXPORT_WORKER_HANDLER_TIMEOUT_S": "2",
        "EXPORT_WORKER_VISIBILITY_TIMEOUT_S": "3",
        "EXPORT_WORKER_RETRY_BASE_S": "0.1",
    }
    with (logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.order.exports"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _job_row(engine: AsyncEngine, job_id: uuid.UUID) -> sa.Row[tuple[object, ...]]:
    async with engine.connect() as conn:
        return (
            await conn.execute(sa.select(report_exports).where(report_exports.c.id == job_id))
        ).one()


async def _wait(engine: AsyncEngine, job_id: uuid.UUID, done: bool, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = await _job_row(engine, job_id)
        if (row.status == "done") if done else row.rows_done >= 6 * CHUNK:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the export did not get there in {timeout_s}s: {row.status} {row.rows_done}")


async def test_a_worker_killed_mid_job_leaves_every_order_exactly_once(
    engine: AsyncEngine,
    tenant: str,
    postgres_url: str,
    redis_url: str,
    queue: Queue,
    tmp_path: Path,
) -> None:
    start = utc("2026-03-01T00:00:00")
    # Pairs of orders at the same instant: the keyset must tell them apart by id.
    placed = await reports_data.insert(
        engine,
        tenant,
        [
            Placed(start + timedelta(minutes=n // 2), "paid", 100 + n, user_id=f"u-{n}")
            for n in range(ORDERS)
        ],
    )
    reports = Reports(engine, IdempotencyStore())
    job = (await reports.request_export(admin(tenant), MARCH, None, "h")).job
    await queue.publish(await _message(engine, job))

    first = _worker(postgres_url, redis_url, queue, "export-a", tmp_path)
    try:
        await _wait(engine, job.id, done=False, timeout_s=30)
        first.send_signal(signal.SIGKILL)
        first.wait(5)
    finally:
        if first.poll() is None:
            first.kill()
    stopped = await _job_row(engine, job.id)
    assert stopped.status == "running"
    assert 0 < stopped.rows_done < ORDERS
    # The checkpoint and the chunks stored agree, whatever the kill interrupted.
    async with engine.connect() as conn:
        stored = _rows("".join(await report_repository.chunks(conn, job.id)))
    assert len(stored) == stopped.rows_done
    assert stopped.position.endswith(stored[-1][0])

    second = _worker(postgres_url, redis_url, queue, "export-b", tmp_path)
    try:
        await _wait(engine, job.id, done=True, timeout_s=60)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(10)
        except subprocess.TimeoutExpired:
            second.kill()
    text = await reports.csv(admin(tenant), job.id)
    ids = [row[0] for row in _rows(text)[1:]]
    assert len(ids) == len(set(ids)) == ORDERS
    assert ids == _expected(placed)
    finished = await _job_row(engine, job.id)
    assert (finished.rows_done, finished.rows_total) == (ORDERS, ORDERS)
    # The second worker took the job over from the killed one's pending delivery.
    assert "reclaimed from a stopped consumer" in (tmp_path / "export-b.log").read_text()
