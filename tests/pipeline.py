"""The order pipeline as tests run it: the inventory server, the Payment provider stub,
the outbox relay and pipelines in this process (or as a process of their own), over
the session's PostgreSQL and Redis.

Orders are placed as the order service places them: stock reserved through the
inventory's ReservationService in the order's id, then `repository.insert_placed`
and `transitions.placed` in one unit of work (which writes `orders.placed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.inventory.bootstrap import bootstrap as inventory_bootstrap
from services.kit import db
from services.kit.config import ServerConfig, ServiceTls
from services.kit.server import create_server
from services.kit.streams import Queue, RetryPolicy, WorkerConfig
from services.kit.streams.relay import Relay, RelayConfig
from services.kit.uow import UnitOfWork
from services.kit.upstream import UpstreamPolicy
from services.launcher import PYTHONPATH, ROOT, procs
from services.order import repository, transitions
from services.order.domain import Caller, LineItem, Order, OrderStatus, StatusChange
from services.order.pipeline import payments
from services.order.pipeline.bootstrap import PipelineProcess, bootstrap
from services.order.pipeline.config import PipelineConfig
from services.order.pipeline.payments import Payment
from services.order.pipeline.reconciler import ReconcilerConfig
from services.order.stock import Reservations
from tests.servers import inventory_config
from tests.upstream_admin import running_stub

T = TypeVar("T")
PRICE = 1250
CUSTOMER = "5f0c1a8e-0000-4000-8000-00000000c0de"


def customer(tenant: str, user: str = CUSTOMER) -> Caller:
    return Caller(tenant, user, tenant_wide=False)


def admin(tenant: str) -> Caller:
    return Caller(tenant, "admin-1", tenant_wide=True)


def _admin_md(tenant: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return (
        ("x-user-id", "admin-1"),
        ("x-user-role", "admin"),
        ("x-tenant-id", tenant),
        *((k.replace("_", "-"), v) for k, v in extra.items()),
    )


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float = 20.0,
    what: str = "the condition",
) -> T:
    """`probe()` once `done` holds of it; AssertionError with the last value after `within` s."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.1)


@dataclass
class Shop:
    """Everything a pipeline test drives and reads."""

    postgres_url: str
    redis_url: str
    inventory_target: str
    payments_url: str
    engine: AsyncEngine
    channel: grpc.aio.Channel
    redis: Redis
    queue: str
    run_dir: Path
    # The service identity its pipelines dial the inventory service with (None: plaintext).
    tls: ServiceTls | None = None
    _consumers: int = field(default=0)

    # Settings ----------------------------------------------------------------------

    def config(self, **changes: Any) -> PipelineConfig:
        """A pipeline of this test run: quick retries, short timeouts, a quick reconciler."""
        self._consumers += 1
        worker = WorkerConfig(
            consumer=f"test-pipeline-{self._consumers}",
            concurrency=8,
            visibility_timeout_s=5.0,
            handler_timeout_s=4.0,
            block_ms=100,
            scheduler_interval_s=0.1,
            retry=RetryPolicy(max_attempts=8, base_s=0.1, cap_s=0.5),
        )
        config = PipelineConfig(
            server=ServerConfig(
                bind="127.0.0.1:0",
                log_level="WARNING",
                otlp_endpoint=None,
                shutdown_grace_s=1,
                tls=self.tls,
            ),
            database_url=self.postgres_url,
            redis_url=self.redis_url,
            inventory_target=self.inventory_target,
            payments_url=self.payments_url,
            queue=self.queue,
            worker=worker,
            payments=UpstreamPolicy(
                attempt_timeout_s=2.0,
                deadline_s=2.2,
                max_attempts=2,
                backoff_base_s=0.05,
                failure_threshold=100,
            ),
            currency="EUR",
            hold_s=3600,
            reconciler=ReconcilerConfig(
                interval_s=0.3, pending_grace_s=30.0, unknown_after_s=0.3, batch=50
            ),
            db_pool_size=12,
        )
        return replace(config, **changes)

    def process_env(self, name: str) -> dict[str, str]:
        """The environment of `python -m services.order.pipeline` for this test run."""
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("ORDER_PIPELINE")},
            "PYTHONPATH": PYTHONPATH,
            "DATABASE_URL": self.postgres_url,
            "REDIS_URL": self.redis_url,
            "INVENTORY_GRPC_TARGET": self.inventory_target,
            "PAYMENTS_URL": self.payments_url,
            "ORDER_PIPELINE_QUEUE": self.queue,
            "ORDER_PIPELINE_NAME": name,
            "ORDER_PIPELINE_GRPC_BIND": f"127.0.0.1:{procs.free_port()}",
            "ORDER_PIPELINE_VISIBILITY_TIMEOUT_S": "5",
            "ORDER_PIPELINE_HANDLER_TIMEOUT_S": "4",
            "PAYMENTS_ATTEMPT_TIMEOUT_S": "2",
            "PAYMENTS_DEADLINE_S": "2.2",
            "RECONCILE_PENDING_GRACE_S": "30",
            "LOG_LEVEL": "INFO",
            **(self.tls.env() if self.tls is not None else {}),
        }

    # Running -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(
        self, pipelines: int = 1, relay: bool = True, **changes: Any
    ) -> AsyncIterator[list[PipelineProcess]]:
        """The relay and `pipelines` pipelines at work until the block ends."""
        stop = asyncio.Event()
        started = [bootstrap(self.config(**changes)) for _ in range(pipelines)]
        tasks = [asyncio.create_task(p.run(stop)) for p in started]
        if relay:
            relayed = Relay(self.engine, self.redis, {"order": self.queue}, RelayConfig(poll_ms=50))
            tasks.append(asyncio.create_task(relayed.run(stop)))
        try:
            yield started
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 15)
            for p in started:
                await p.close()

    def spawn(self, name: str) -> procs.Proc:
        """A pipeline as a process of its own (to be killed)."""
        return procs.start(
            name,
            [sys.executable, "-m", "services.order.pipeline"],
            log_dir=self.run_dir / "logs",
            env=self.process_env(name),
            cwd=ROOT,
        )

    @staticmethod
    def kill(proc: procs.Proc) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(10)

    # Stock -------------------------------------------------------------------------

    async def stock(self, tenant: str, available: int) -> uuid.UUID:
        """A product of the tenant with `available` units."""
        product = uuid.uuid4()
        stub = inventory_pb2_grpc.InventoryServiceStub(self.channel)  # type: ignore[no-untyped-call]
        await stub.Restock(
            inventory_pb2.RestockRequest(
                product_id=str(product), available=available, low_stock_threshold=0
            ),
            metadata=_admin_md(tenant, if_match='"0"', idempotency_key=str(uuid.uuid4())),
        )
        return product

    async def level(self, tenant: str, product: uuid.UUID) -> tuple[int, int]:
        """(available, reserved) of a product."""
        stub = inventory_pb2_grpc.InventoryServiceStub(self.channel)  # type: ignore[no-untyped-call]
        stock = await stub.GetStock(
            inventory_pb2.GetStockRequest(product_id=str(product)), metadata=_admin_md(tenant)
        )
        return stock.available, stock.reserved

    async def eventually_level(
        self, tenant: str, product: uuid.UUID, level: tuple[int, int]
    ) -> None:
        await eventually(
            lambda: self.level(tenant, product),
            lambda now: now == level,
            what=f"stock of {product} to be {level}",
        )

    async def reservation(self, tenant: str, order_id: uuid.UUID) -> str:
        """The status of the order's reservation."""
        stub = inventory_pb2_grpc.ReservationServiceStub(self.channel)  # type: ignore[no-untyped-call]
        found = await stub.GetReservation(
            inventory_pb2.GetReservationRequest(reservation_id=str(order_id)),
            metadata=_admin_md(tenant),
        )
        return str(found.status)

    # Orders ------------------------------------------------------------------------

    async def place(
        self,
        tenant: str,
        units: dict[uuid.UUID, int],
        *,
        reserve: bool = True,
        price: int = PRICE,
        user: str = CUSTOMER,
    ) -> uuid.UUID:
        """A placed order as the order service writes it: reserved, or pending when
        `reserve` is False (the inventory was away)."""
        order_id = uuid.uuid4()
        if reserve:
            await Reservations(self.channel, "order").reserve(tenant, order_id, units)
        lines = [
            LineItem(f"SKU-{n}", q, price, product, f"Product {n}")
            for n, (product, q) in enumerate(units.items(), start=1)
        ]
        status = OrderStatus.RESERVED if reserve else OrderStatus.PENDING
        async with UnitOfWork(self.engine) as work:
            order = await repository.insert_placed(
                work, customer(tenant, user), order_id, None, lines, status
            )
            await transitions.placed(work, order, actor=user)
        return order_id

    async def order(self, tenant: str, order_id: uuid.UUID) -> Order:
        async with self.engine.connect() as conn:
            return await repository.get(conn, admin(tenant), order_id)

    async def history(self, order_id: uuid.UUID) -> list[StatusChange]:
        async with self.engine.connect() as conn:
            return await repository.status_history(conn, order_id)

    async def statuses(self, order_id: uuid.UUID) -> list[str]:
        return [change.to_status.value for change in await self.history(order_id)]

    async def payments(self, order_id: uuid.UUID) -> list[Payment]:
        async with self.engine.connect() as conn:
            return await payments.of_order(conn, order_id)

    async def until(
        self, tenant: str, order_id: uuid.UUID, *status: OrderStatus, within: float = 20.0
    ) -> Order:
        """The order once it has one of these statuses."""
        return await eventually(
            lambda: self.order(tenant, order_id),
            lambda o: o.status in status,
            within=within,
            what=f"order {order_id} to be {'/'.join(s.value for s in status)}",
        )

    async def until_paid_for(
        self, order_id: uuid.UUID, *status: str, within: float = 20.0
    ) -> list[Payment]:
        """The order's payments once the latest has one of these statuses."""
        return await eventually(
            lambda: self.payments(order_id),
            lambda found: bool(found) and found[-1].status in status,
            within=within,
            what=f"a payment of {order_id} to be {'/'.join(status)}",
        )

    async def audit_actions(self, tenant: str, entity: str, entity_id: uuid.UUID) -> list[str]:
        return [action for action, *_ in await self.audit_rows(tenant, entity, entity_id)]

    async def audit_rows(
        self, tenant: str, entity: str, entity_id: uuid.UUID
    ) -> list[tuple[str, str, Any, Any]]:
        """(action, actor, before, after) of each audit row of the entity, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT action, actor, before, after FROM audit_log WHERE tenant_id = :t"
                    " AND entity_type = :e AND entity_id = :i ORDER BY id"
                ),
                {"t": tenant, "e": entity, "i": str(entity_id)},
            )
            return [(r.action, r.actor, r.before, r.after) for r in rows]

    # The provider ------------------------------------------------------------------

    async def ledger(self, tenant: str, order_id: uuid.UUID) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.payments_url, timeout=5) as client:
            response = await client.get(
                "/_admin/ledger", params={"orderId": str(order_id), "tenant": tenant}
            )
            response.raise_for_status()
            ledger: dict[str, Any] = response.json()
            return ledger

    async def counts(self, tenant: str, order_id: uuid.UUID) -> tuple[int, int, int]:
        """(captures, refunds, declines) the provider has for the order."""
        ledger = await self.ledger(tenant, order_id)
        return (
            ledger["captures"]["count"],
            ledger["refunds"]["count"],
            ledger["declines"]["count"],
        )

    async def faults(self, **config: Any) -> None:
        async with httpx.AsyncClient(base_url=self.payments_url, timeout=5) as client:
            (await client.put("/_admin/faults", json=config)).raise_for_status()

    async def no_faults(self) -> None:
        async with httpx.AsyncClient(base_url=self.payments_url, timeout=5) as client:
            (await client.delete("/_admin/faults")).raise_for_status()

    async def dead_letters(self) -> int:
        return (await Queue(self.redis, self.queue).stats()).dead


def only(found: list[Payment]) -> Payment:
    """The one payment of an order."""
    assert len(found) == 1, found
    return found[0]


# Fixtures (a module imports those it uses) ------------------------------------------


@pytest.fixture(scope="module")
def pipeline_stubs(session_run_dir: Path) -> Iterator[tuple[str, str, str]]:
    """The ERP and Warehouse stubs (the inventory's config names them) and the Payment
    provider stub of this module."""
    with (
        running_stub("erp", session_run_dir) as erp,
        running_stub("warehouse", session_run_dir) as warehouse,
        running_stub("payments", session_run_dir) as pay,
    ):
        yield erp, warehouse, pay


@pytest.fixture(scope="module")
async def shop(
    postgres_url: str,
    redis_url: str,
    pipeline_stubs: tuple[str, str, str],
    session_run_dir: Path,
) -> AsyncIterator[Shop]:
    erp, warehouse, pay = pipeline_stubs
    config = inventory_config(postgres_url, erp, warehouse)
    inventory = inventory_bootstrap(config)
    server, port, _health = await create_server(inventory.registrations, config.server.bind)
    engine = db.create_engine(postgres_url, pool_size=5)
    redis = Redis.from_url(redis_url)
    queue = f"orders-test-{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Shop(
            postgres_url=postgres_url,
            redis_url=redis_url,
            inventory_target=f"127.0.0.1:{port}",
            payments_url=pay,
            engine=engine,
            channel=channel,
            redis=redis,
            queue=queue,
            run_dir=session_run_dir,
        )
    await redis.delete(
        *(f"queue:{queue}{suffix}" for suffix in ("", ":delayed", ":dead", ":stats"))
    )
    await redis.aclose()
    await engine.dispose()
    await server.stop(1)
    await inventory.close()


@pytest.fixture(autouse=True)
async def clean_faults(shop: Shop) -> AsyncIterator[None]:
    await shop.no_faults()
    yield
    await shop.no_faults()
