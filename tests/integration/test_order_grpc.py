"""The order service over native gRPC: a server on port 0, real PostgreSQL, no edge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.order.bootstrap import SERVICE_NAME
from tests.servers import order_config, serving


@pytest.fixture(scope="module")
async def channel(postgres_url: str) -> AsyncIterator[grpc.aio.Channel]:
    async with serving(order_config(postgres_url)) as (_app, ch):
        yield ch


# A caller inside the network sets the identity the edge would forward from a token.
USER = ("x-user-id", "5f0c1a8e-0000-4000-8000-000000000001")


def _md(tenant: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return (USER, ("x-tenant-id", tenant), *((k.replace("_", "-"), v) for k, v in extra.items()))


async def test_health_and_reflection_report_the_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in stub.ServerReflectionInfo(iter([request])):
        names = {s.name for s in answer.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
        break


async def test_a_native_client_gets_the_order_and_its_etag(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    call = stub.CreateOrder(
        order_pb2.CreateOrderRequest(), metadata=_md(tenant, idempotency_key="g1")
    )
    order = await call
    initial = dict(await call.initial_metadata())
    assert (order.status, order.version, order.tenant_id) == ("draft", 1, tenant)
    assert initial["etag"] == '"1"'


async def test_errors_carry_the_status_code_and_rich_details(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    order = await stub.CreateOrder(
        order_pb2.CreateOrderRequest(), metadata=_md(tenant, idempotency_key="g2")
    )
    await stub.ConfirmOrder(
        order_pb2.ConfirmOrderRequest(id=order.id, total_cents=5),
        metadata=_md(tenant, if_match="1"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ConfirmOrder(
            order_pb2.ConfirmOrderRequest(id=order.id, total_cents=5),
            metadata=_md(tenant, if_match="1"),
        )
    error = raised.value
    assert error.code() is grpc.StatusCode.ABORTED
    assert error.details() == "stale version"
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.metadata["currentVersion"]) == ("conflict", "2")


async def test_a_malformed_tenant_is_refused_before_any_query(channel: grpc.aio.Channel) -> None:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListOrders(order_pb2.ListOrdersRequest(), metadata=_md("bad tenant"))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_call_without_a_verified_user_is_refused_by_the_service_itself(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    # The edge checks tokens; the service checks again that the edge named a user.
    stub = order_pb2_grpc.OrderServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListOrders(order_pb2.ListOrdersRequest(), metadata=(("x-tenant-id", tenant),))
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as mismatch:
        await stub.ListOrders(
            order_pb2.ListOrdersRequest(),
            metadata=(*_md(tenant), ("x-requested-tenant-id", f"{tenant}-other")),
        )
    assert mismatch.value.code() is grpc.StatusCode.PERMISSION_DENIED


# --- Internal callers: who they act as -----------------------------------------------------

ANN = "5f0c1a8e-0000-4000-8000-0000000000a1"
BOB = "5f0c1a8e-0000-4000-8000-0000000000b2"
PIPELINE = "service:order-pipeline"


def _as(
    tenant: str, user: str | None, role: str | None = None, **extra: str
) -> tuple[tuple[str, str], ...]:
    md = [("x-tenant-id", tenant)]
    if user is not None:
        md.append(("x-user-id", user))
    if role is not None:
        md.append(("x-user-role", role))
    return (*md, *((k.replace("_", "-"), v) for k, v in extra.items()))


async def _create(
    stub: order_pb2_grpc.OrderServiceStub, md: tuple[tuple[str, str], ...]
) -> order_pb2.Order:
    key = ("idempotency-key", f"k-{id(md)}-{len(md)}")
    order: order_pb2.Order = await stub.CreateOrder(
        order_pb2.CreateOrderRequest(), metadata=(*md, key)
    )
    return order


async def _listed(
    stub: order_pb2_grpc.OrderServiceStub, md: tuple[tuple[str, str], ...]
) -> set[str]:
    page = await stub.ListOrders(order_pb2.ListOrdersRequest(limit=100), metadata=md)
    return {o.id for o in page.items}


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code()


async def test_a_direct_caller_acting_as_a_customer_sees_only_that_customers_orders(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    anns = await _create(stub, _as(tenant, ANN))
    bobs = await _create(stub, _as(tenant, BOB, "customer"))
    assert (anns.user_id, bobs.user_id) == (ANN, BOB)
    # No role, the customer role and any role the platform does not know all
    # act as a customer: fail closed, never tenant-wide.
    for role in (None, "customer", "service", "Admin", ""):
        assert await _listed(stub, _as(tenant, ANN, role)) == {anns.id}
        get = stub.GetOrder(order_pb2.GetOrderRequest(id=bobs.id), metadata=_as(tenant, ANN, role))
        assert await _code(get) is grpc.StatusCode.NOT_FOUND
    confirm = stub.ConfirmOrder(
        order_pb2.ConfirmOrderRequest(id=bobs.id, total_cents=1),
        metadata=_as(tenant, ANN, if_match="1"),
    )
    assert await _code(confirm) is grpc.StatusCode.NOT_FOUND


async def test_a_service_identity_with_the_admin_role_acts_on_the_whole_tenant_only(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    anns = await _create(stub, _as(tenant, ANN))
    elsewhere = await _create(stub, _as(f"{tenant}-other", ANN))
    service = _as(tenant, PIPELINE, "admin")
    own = await _create(stub, service)
    assert own.user_id == PIPELINE  # the service owns what it creates
    assert await _listed(stub, service) == {anns.id, own.id}
    confirmed = await stub.ConfirmOrder(
        order_pb2.ConfirmOrderRequest(id=anns.id, total_cents=3),
        metadata=(*service, ("if-match", "1")),
    )
    assert (confirmed.status, confirmed.user_id) == ("confirmed", ANN)
    # Its scope is the one tenant it names.
    get = stub.GetOrder(order_pb2.GetOrderRequest(id=elsewhere.id), metadata=service)
    assert await _code(get) is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("user", [None, "", "x" * 129])
async def test_without_a_valid_user_even_the_admin_role_sees_nothing(
    channel: grpc.aio.Channel, tenant: str, user: str | None
) -> None:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    await _create(stub, _as(tenant, ANN))
    md = _as(tenant, user, "admin")
    assert await _code(stub.ListOrders(order_pb2.ListOrdersRequest(), metadata=md)) is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    create = stub.CreateOrder(
        order_pb2.CreateOrderRequest(), metadata=(*md, ("idempotency-key", "k"))
    )
    assert await _code(create) is grpc.StatusCode.UNAUTHENTICATED


async def test_direct_callers_own_their_idempotency_keys(
    channel: grpc.aio.Channel, tenant: str
) -> None:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    request = order_pb2.CreateOrderRequest(customer_ref="cart")
    key = ("idempotency-key", "shared")
    first = await stub.CreateOrder(request, metadata=(*_as(tenant, ANN), key))
    other = await stub.CreateOrder(request, metadata=(*_as(tenant, BOB), key))
    again = await stub.CreateOrder(request, metadata=(*_as(tenant, ANN), key))
    assert first.id != other.id
    assert again == first


async def test_the_owner_list_reads_its_index_in_order(engine: AsyncEngine) -> None:
    # On a small table the planner may as well take the tenant index and filter;
    # without it (dropped inside this transaction, rolled back below) the owner
    # index must serve the query in order, with no Sort.
    async with engine.connect() as conn:
        await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        await conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
        await conn.execute(sa.text("DROP INDEX ix_orders_tenant_page"))
        plan = "\n".join(
            row[0]
            for row in await conn.execute(
                sa.text(
                    "EXPLAIN SELECT * FROM orders WHERE tenant_id = 'acme' AND user_id = 'u'"
                    " AND (created_at, id) < (now(), gen_random_uuid())"
                    " ORDER BY created_at DESC, id DESC LIMIT 11"
                )
            )
        )
        await conn.rollback()
    assert "ix_orders_owner_page" in plan, plan
    assert "Sort" not in plan, plan
