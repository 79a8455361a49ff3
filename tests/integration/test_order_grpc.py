"""The order service over native gRPC: a server on port 0, real PostgreSQL, no edge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc

from services.kit.config import ServerConfig
from services.kit.server import create_server
from services.launcher.platform import State
from services.order.bootstrap import SERVICE_NAME, bootstrap
from services.order.config import OrderConfig


@pytest.fixture(scope="module")
async def channel(platform: State) -> AsyncIterator[grpc.aio.Channel]:
    config = OrderConfig(
        server=ServerConfig(
            bind="127.0.0.1:0", log_level="WARNING", otlp_endpoint=None, shutdown_grace_s=1
        ),
        database_url=platform.database_url,
        db_pool_size=2,
        cursor_secret=b"integration-test-cursor-secret",
        idempotency_ttl_s=3600,
    )
    app = bootstrap(config)
    server, port, _health = await create_server(app.registrations, config.server.bind)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(1)
    await app.close()


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
