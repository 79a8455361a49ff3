"""The inventory service over native gRPC: a server on port 0, real PostgreSQL, no edge.

The concurrency tests race real clients on real connections: the ledger's
conditional updates and the CHECK are what keep the counts right.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2, status_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.inventory.bootstrap import InventoryApp, bootstrap
from services.kit.audit import audit_log
from services.kit.outbox import outbox
from services.kit.server import create_server
from tests.servers import inventory_config
from tests.upstream_admin import StubAdmin, running_stub


@pytest.fixture(scope="module")
def stubs(session_run_dir: Path) -> Iterator[tuple[str, str]]:
    """The ERP and Warehouse stubs the sync reads (their URLs)."""
    with (
        running_stub("erp", session_run_dir) as erp,
        running_stub("warehouse", session_run_dir) as warehouse,
    ):
        yield erp, warehouse


@pytest.fixture(scope="module")
async def served(
    postgres_url: str, stubs: tuple[str, str]
) -> AsyncIterator[tuple[InventoryApp, grpc.aio.Channel]]:
    erp, warehouse = stubs
    config = inventory_config(postgres_url, erp, warehouse)
    app = bootstrap(config)
    server, port, _health = await create_server(app.registrations, config.server.bind)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield app, ch
    await server.stop(1)
    await app.close()


@pytest.fixture
def channel(served: tuple[InventoryApp, grpc.aio.Channel]) -> grpc.aio.Channel:
    return served[1]


@pytest.fixture
def app(served: tuple[InventoryApp, grpc.aio.Channel]) -> InventoryApp:
    return served[0]


def _service(tenant: str, **extra: str) -> tuple[tuple[str, str], ...]:
    """A service identity of the tenant, as the order pipeline calls."""
    return (
        ("x-user-id", "service:order-pipeline"),
        ("x-user-role", "admin"),
        ("x-tenant-id", tenant),
        *((k.replace("_", "-"), v) for k, v in extra.items()),
    )


def _code(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


async def _restock(
    channel: grpc.aio.Channel, tenant: str, product: str, available: int, threshold: int = 0
) -> inventory_pb2.Stock:
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    current = await stub.GetStock(
        inventory_pb2.GetStockRequest(product_id=product), metadata=_service(tenant)
    )
    return await stub.Restock(
        inventory_pb2.RestockRequest(
            product_id=product, available=available, low_stock_threshold=threshold
        ),
        metadata=_service(tenant, if_match=f'"{current.version}"', idempotency_key=uuid4()),
    )


def uuid4() -> str:
    return str(uuid.uuid4())


def _reserve_request(
    rid: str, *lines: tuple[str, int], ttl: int = 0
) -> inventory_pb2.ReserveRequest:
    return inventory_pb2.ReserveRequest(
        reservation_id=rid,
        lines=[inventory_pb2.ReservationLine(product_id=p, quantity=q) for p, q in lines],
        ttl_seconds=ttl,
    )


async def _stock(channel: grpc.aio.Channel, tenant: str, product: str) -> inventory_pb2.Stock:
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    return await stub.GetStock(
        inventory_pb2.GetStockRequest(product_id=product), metadata=_service(tenant)
    )


async def _race(
    channel: grpc.aio.Channel, tenant: str, requests: list[inventory_pb2.ReserveRequest]
) -> tuple[int, list[str]]:
    """Send every reserve at once: how many succeeded, and the codes of the rest."""
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    results = await asyncio.gather(
        *(stub.Reserve(r, metadata=_service(tenant)) for r in requests), return_exceptions=True
    )
    codes = [_code(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
    others = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, grpc.aio.AioRpcError)
    ]
    assert others == []
    return len(results) - len(codes), codes


async def test_fifty_buyers_of_the_last_unit_one_gets_it(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    product = uuid4()
    await _restock(channel, tenant, product, 1)
    ok, codes = await _race(
        channel, tenant, [_reserve_request(uuid4(), (product, 1)) for _ in range(50)]
    )
    assert ok == 1
    assert codes == ["insufficient_stock"] * 49
    level = await _stock(channel, tenant, product)
    assert (level.available, level.reserved) == (0, 1)


async def test_sixty_buyers_of_seven_units_exactly_seven_get_one(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    product = uuid4()
    await _restock(channel, tenant, product, 7)
    ok, codes = await _race(
        channel, tenant, [_reserve_request(uuid4(), (product, 1)) for _ in range(60)]
    )
    assert (ok, codes) == (7, ["insufficient_stock"] * 53)
    level = await _stock(channel, tenant, product)
    assert (level.available, level.reserved) == (0, 7)


async def test_opposite_line_orders_never_deadlock(channel: grpc.aio.Channel, tenant: str) -> None:
    a, b = uuid4(), uuid4()
    await _restock(channel, tenant, a, 25)
    await _restock(channel, tenant, b, 25)
    requests = [
        _reserve_request(uuid4(), (a, 1), (b, 1))
        if n % 2
        else _reserve_request(uuid4(), (b, 1), (a, 1))
        for n in range(40)
    ]
    ok, codes = await _race(channel, tenant, requests)
    assert set(codes) <= {"insufficient_stock"}
    assert ok == 25
    for product in (a, b):
        level = await _stock(channel, tenant, product)
        assert (level.available, level.reserved) == (0, 25)


async def test_a_failing_line_reserves_nothing_and_names_the_products(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    plenty, scarce = uuid4(), uuid4()
    await _restock(channel, tenant, plenty, 10)
    await _restock(channel, tenant, scarce, 1)
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Reserve(
            _reserve_request(uuid4(), (plenty, 3), (scarce, 2)), metadata=_service(tenant)
        )
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert _code(raised.value) == "insufficient_stock"
    assert scarce in (raised.value.details() or "")
    assert plenty not in (raised.value.details() or "")
    assert (await _stock(channel, tenant, plenty)).available == 10


async def test_a_reservation_writes_one_audit_row_and_a_refused_one_none(
    channel: grpc.aio.Channel, engine: AsyncEngine, tenant: str
) -> None:
    a, b = sorted([uuid4(), uuid4()])
    await _restock(channel, tenant, a, 5)
    await _restock(channel, tenant, b, 1)
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    kept, refused = uuid4(), uuid4()
    await stub.Reserve(_reserve_request(kept, (a, 2), (b, 1)), metadata=_service(tenant))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Reserve(_reserve_request(refused, (a, 1), (b, 1)), metadata=_service(tenant))
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(audit_log.c.entity_id, audit_log.c.before, audit_log.c.after).where(
                    audit_log.c.tenant_id == tenant, audit_log.c.action == "reservation.reserve"
                )
            )
        ).all()
    assert [(r.entity_id, r.before, r.after) for r in rows] == [
        (kept, None, {"status": "reserved", "lines": [[a, 2], [b, 1]]})
    ]
    levels = [await _stock(channel, tenant, p) for p in (a, b)]
    assert [(x.available, x.reserved, x.version) for x in levels] == [(3, 2, 2), (0, 1, 2)]


async def test_the_same_reservation_id_reserves_once(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    product, rid = uuid4(), uuid4()
    await _restock(channel, tenant, product, 10)
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    first, second = await asyncio.gather(
        stub.Reserve(_reserve_request(rid, (product, 2), (product, 1)), metadata=_service(tenant)),
        stub.Reserve(_reserve_request(rid, (product, 3)), metadata=_service(tenant)),
    )
    assert first == second
    assert [(line.product_id, line.quantity) for line in first.lines] == [(product, 3)]
    level = await _stock(channel, tenant, product)
    assert (level.available, level.reserved) == (7, 3)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Reserve(_reserve_request(rid, (product, 4)), metadata=_service(tenant))
    assert _code(raised.value) == "conflict"


async def test_release_and_commit_are_idempotent(channel: grpc.aio.Channel, tenant: str) -> None:
    product = uuid4()
    await _restock(channel, tenant, product, 10)
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    released, committed = uuid4(), uuid4()
    for rid in (released, committed):
        await stub.Reserve(_reserve_request(rid, (product, 2)), metadata=_service(tenant))

    first = await stub.Release(
        inventory_pb2.ReleaseRequest(reservation_id=released), metadata=_service(tenant)
    )
    again = await stub.Release(
        inventory_pb2.ReleaseRequest(reservation_id=released), metadata=_service(tenant)
    )
    assert first.status == "released"
    assert again == first
    level = await _stock(channel, tenant, product)
    assert (level.available, level.reserved) == (8, 2)

    first = await stub.Commit(
        inventory_pb2.CommitRequest(reservation_id=committed), metadata=_service(tenant)
    )
    again = await stub.Commit(
        inventory_pb2.CommitRequest(reservation_id=committed), metadata=_service(tenant)
    )
    assert first.status == "committed"
    assert again == first
    level = await _stock(channel, tenant, product)
    assert (level.available, level.reserved) == (8, 0)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Commit(
            inventory_pb2.CommitRequest(reservation_id=released), metadata=_service(tenant)
        )
    assert (raised.value.code(), _code(raised.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "conflict",
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Release(
            inventory_pb2.ReleaseRequest(reservation_id=uuid4()), metadata=_service(tenant)
        )
    assert _code(raised.value) == "not_found"
    # Another tenant never sees the reservation.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetReservation(
            inventory_pb2.GetReservationRequest(reservation_id=committed),
            metadata=_service(f"{tenant}-other"),
        )
    assert _code(raised.value) == "not_found"


async def test_concurrent_releases_put_the_units_back_once(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    product, rid = uuid4(), uuid4()
    await _restock(channel, tenant, product, 5)
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    await stub.Reserve(_reserve_request(rid, (product, 5)), metadata=_service(tenant))
    answers = await asyncio.gather(
        *(
            stub.Release(
                inventory_pb2.ReleaseRequest(reservation_id=rid), metadata=_service(tenant)
            )
            for _ in range(10)
        )
    )
    assert {a.status for a in answers} == {"released"}
    level = await _stock(channel, tenant, product)
    assert (level.available, level.reserved) == (5, 0)


async def test_the_reaper_releases_an_expired_reservation_once(
    channel: grpc.aio.Channel, app: InventoryApp, tenant: str
) -> None:
    product, expired, live = uuid4(), uuid4(), uuid4()
    await _restock(channel, tenant, product, 10)
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    await stub.Reserve(_reserve_request(expired, (product, 3), ttl=1), metadata=_service(tenant))
    await stub.Reserve(_reserve_request(live, (product, 2), ttl=3600), metadata=_service(tenant))
    later = datetime.now(UTC) + timedelta(seconds=5)
    # Two reapers at once: each expired reservation is released by one of them.
    reaped = await asyncio.gather(
        app.reservations.reap_once(1000, now=later), app.reservations.reap_once(1000, now=later)
    )
    again = await app.reservations.reap_once(1000, now=later)
    got = await stub.GetReservation(
        inventory_pb2.GetReservationRequest(reservation_id=expired), metadata=_service(tenant)
    )
    assert got.status == "released"
    kept = await stub.GetReservation(
        inventory_pb2.GetReservationRequest(reservation_id=live), metadata=_service(tenant)
    )
    assert kept.status == "reserved"
    level = await _stock(channel, tenant, product)
    assert (level.available, level.reserved) == (8, 2)
    assert (sum(reaped) >= 1 and again == 0) or sum(reaped) + again >= 1
    assert again == 0


async def test_restock_with_a_stale_if_match_is_a_conflict(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    product = uuid4()
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    created = await stub.Restock(
        inventory_pb2.RestockRequest(product_id=product, available=4, low_stock_threshold=1),
        metadata=_service(tenant, if_match='"0"', idempotency_key="k1"),
    )
    assert (created.version, created.available) == (1, 4)
    replay = stub.Restock(
        inventory_pb2.RestockRequest(product_id=product, available=4, low_stock_threshold=1),
        metadata=_service(tenant, if_match='"0"', idempotency_key="k1"),
    )
    assert await replay == created
    assert ("idempotent-replayed", "true") in tuple(await replay.initial_metadata())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Restock(
            inventory_pb2.RestockRequest(product_id=product, available=9),
            metadata=_service(tenant, if_match='"0"', idempotency_key="k2"),
        )
    assert (raised.value.code(), _code(raised.value)) == (grpc.StatusCode.ABORTED, "conflict")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Restock(
            inventory_pb2.RestockRequest(product_id=product, available=9),
            metadata=_service(tenant, idempotency_key="k3"),
        )
    assert _code(raised.value) == "precondition_required"
    assert (await _stock(channel, tenant, product)).available == 4


async def _low_stock_rows(engine: AsyncEngine, tenant: str) -> list[dict[str, object]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.payload, outbox.c.aggregate_type).where(
                outbox.c.tenant_id == tenant, outbox.c.event_type == "inventory.low_stock"
            )
        )
        return [{"aggregate": r.aggregate_type, **r.payload} for r in rows]


async def test_the_low_stock_event_is_written_once_per_crossing(
    channel: grpc.aio.Channel, engine: AsyncEngine, tenant: str
) -> None:
    product = uuid4()
    await _restock(channel, tenant, product, 6, threshold=3)
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    await stub.Reserve(_reserve_request(uuid4(), (product, 2)), metadata=_service(tenant))  # 4
    assert await _low_stock_rows(engine, tenant) == []
    await stub.Reserve(_reserve_request(uuid4(), (product, 1)), metadata=_service(tenant))  # 3
    await stub.Reserve(_reserve_request(uuid4(), (product, 1)), metadata=_service(tenant))  # 2
    rows = await _low_stock_rows(engine, tenant)
    assert len(rows) == 1
    assert rows[0]["aggregate"] == "inventory"
    assert (rows[0]["productId"], rows[0]["available"], rows[0]["lowStockThreshold"]) == (
        product,
        3,
        3,
    )
    # A failed reservation writes nothing; a restock above re-arms, the next crossing writes.
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Reserve(_reserve_request(uuid4(), (product, 50)), metadata=_service(tenant))
    await _restock(channel, tenant, product, 10, threshold=3)
    await stub.Reserve(_reserve_request(uuid4(), (product, 8)), metadata=_service(tenant))
    assert len(await _low_stock_rows(engine, tenant)) == 2


async def test_low_stock_pages_by_product_with_a_tenant_bound_cursor(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    low = sorted(uuid4() for _ in range(5))
    for product in low:
        await _restock(channel, tenant, product, 1, threshold=2)
    await _restock(channel, tenant, uuid4(), 10, threshold=2)
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    seen: list[str] = []
    cursor = ""
    while True:
        page = await stub.ListLowStock(
            inventory_pb2.ListLowStockRequest(limit=2, cursor=cursor), metadata=_service(tenant)
        )
        seen.extend(item.product_id for item in page.items)
        if not page.HasField("next_cursor"):
            break
        cursor = page.next_cursor
    assert seen == low
    first = await stub.ListLowStock(
        inventory_pb2.ListLowStockRequest(limit=2), metadata=_service(tenant)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListLowStock(
            inventory_pb2.ListLowStockRequest(cursor=first.next_cursor),
            metadata=_service(f"{tenant}-other"),
        )
    assert _code(raised.value) == "invalid_argument"


async def test_reservations_need_the_admin_role(channel: grpc.aio.Channel, tenant: str) -> None:
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    customer = (("x-user-id", "someone"), ("x-tenant-id", tenant), ("x-user-role", "customer"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Reserve(_reserve_request(uuid4(), (uuid4(), 1)), metadata=customer)
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Reserve(
            _reserve_request(uuid4(), (uuid4(), 1)), metadata=(("x-tenant-id", tenant),)
        )
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_the_ledger_refuses_negative_stock_even_from_a_bug(
    engine: AsyncEngine, channel: grpc.aio.Channel, tenant: str
) -> None:
    product = uuid4()
    await _restock(channel, tenant, product, 1)
    with pytest.raises(sa.exc.IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE stock SET available = available - 2 WHERE tenant_id = :t"),
                {"t": tenant},
            )


def _erp_product(erp: StubAdmin, tenant: str, sku: str) -> httpx.Response:
    return httpx.post(
        f"{erp.url}/products",
        json={"sku": sku, "name": sku, "price_cents": 100},
        headers={"X-Tenant-Id": tenant, "Idempotency-Key": uuid4()},
    )


async def test_sync_takes_on_hand_from_the_warehouse_by_the_erps_skus(
    channel: grpc.aio.Channel, stubs: tuple[str, str], engine: AsyncEngine, tenant: str
) -> None:
    erp, warehouse = StubAdmin(stubs[0]), StubAdmin(stubs[1])
    products: dict[str, str] = {}
    for sku in ("SKU-A", "SKU-B", "SKU-C"):
        made = _erp_product(erp, tenant, sku)
        assert made.status_code == 201, made.text
        products[sku] = made.json()["id"]
    for sku, on_hand, held in (("SKU-A", 12, 2), ("SKU-B", 3, 0)):
        warehouse.as_tenant(
            tenant, "PUT", f"/stock/{sku}", json={"on_hand": on_hand, "reserved": held}
        ).raise_for_status()
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    synced = await stub.SyncStock(inventory_pb2.SyncStockRequest(), metadata=_service(tenant))
    assert (synced.products, synced.changed) == (3, 3)
    a = await _stock(channel, tenant, products["SKU-A"])
    assert (a.available, a.reserved, a.low_stock_threshold, a.version) == (10, 0, 5, 1)
    assert (await _stock(channel, tenant, products["SKU-B"])).available == 3
    assert (await _stock(channel, tenant, products["SKU-C"])).version == 1  # stocked at zero

    # Units held by reservations count as on hand: available is what is left of them.
    reservations = inventory_pb2_grpc.ReservationServiceStub(channel)
    await reservations.Reserve(
        _reserve_request(uuid4(), (products["SKU-A"], 4)), metadata=_service(tenant)
    )
    warehouse.as_tenant(
        tenant, "PUT", "/stock/SKU-A", json={"on_hand": 7, "reserved": 2}
    ).raise_for_status()
    again = await stub.SyncStock(inventory_pb2.SyncStockRequest(), metadata=_service(tenant))
    assert (again.products, again.changed) == (3, 1)
    a = await _stock(channel, tenant, products["SKU-A"])
    assert (a.available, a.reserved) == (1, 4)
    # 6 -> 1 crossed the threshold of 5: one event (SKU-B and SKU-C were created low).
    rows = await _low_stock_rows(engine, tenant)
    assert sorted(r["productId"] for r in rows) == sorted(
        [products["SKU-A"], products["SKU-B"], products["SKU-C"]]
    )


async def test_sync_fails_whole_when_the_warehouse_is_down(
    channel: grpc.aio.Channel, stubs: tuple[str, str], tenant: str
) -> None:
    erp, warehouse = StubAdmin(stubs[0]), StubAdmin(stubs[1])
    made = _erp_product(erp, tenant, "SKU-D")
    warehouse.faults(error_rate=1.0)
    try:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SyncStock(inventory_pb2.SyncStockRequest(), metadata=_service(tenant))
        assert _code(raised.value) in ("unavailable", "deadline_exceeded")
    finally:
        warehouse.clear()
    assert (await _stock(channel, tenant, made.json()["id"])).version == 0


async def test_an_extended_reservation_outlives_the_reaper_and_a_released_one_cannot_be(
    channel: grpc.aio.Channel, app: InventoryApp, tenant: str
) -> None:
    product, held, gone = uuid4(), uuid4(), uuid4()
    await _restock(channel, tenant, product, 10)
    stub = inventory_pb2_grpc.ReservationServiceStub(channel)
    for rid in (held, gone):
        await stub.Reserve(_reserve_request(rid, (product, 1), ttl=1), metadata=_service(tenant))
    extended = await stub.Extend(
        inventory_pb2.ExtendRequest(reservation_id=held, ttl_seconds=3600),
        metadata=_service(tenant),
    )
    assert extended.expires_at.ToDatetime(UTC) > datetime.now(UTC) + timedelta(minutes=59)
    await app.reservations.reap_once(1000, now=datetime.now(UTC) + timedelta(seconds=5))
    got = {
        rid: (
            await stub.GetReservation(
                inventory_pb2.GetReservationRequest(reservation_id=rid), metadata=_service(tenant)
            )
        ).status
        for rid in (held, gone)
    }
    assert got == {held: "reserved", gone: "released"}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Extend(
            inventory_pb2.ExtendRequest(reservation_id=gone, ttl_seconds=60),
            metadata=_service(tenant),
        )
    assert (raised.value.code(), _code(raised.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "conflict",
    )
