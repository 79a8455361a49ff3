"""Service identity: only platform workloads reach a service port (mTLS, `./shop up`'s default).

A service believes the identity metadata a call carries (`x-user-id`, `x-tenant-id`,
`x-user-role`). Through Envoy those come from a verified token; on the service port
they would be anyone's to forge, so the port takes only clients holding a
certificate of the platform's CA. Refused in the TLS handshake: no client
certificate, one from another CA, plaintext. Accepted: the platform's own.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services import topology
from services.kit import grpc_client
from services.kit.config import ServiceTls
from services.launcher import certs
from services.launcher.platform import State
from services.topology import Kind
from tests.e2e.conftest import Api

pytestmark = pytest.mark.e2e


def forged(tenant: str) -> tuple[tuple[str, str], ...]:
    """What an intruder on the network would send: an admin of the tenant."""
    return (
        ("x-user-id", "intruder"),
        ("x-tenant-id", tenant),
        ("x-user-role", "admin"),
        ("idempotency-key", uuid.uuid4().hex),
    )


@pytest.fixture(scope="module")
def foreign_ca() -> ServiceTls:
    """A certificate that names `launcher` like the platform's, from a CA of its own."""
    directory = Path(tempfile.mkdtemp(prefix="foreign-ca-"))
    certs.issue(directory, [certs.LAUNCHER], days=1)
    return certs.files(directory, certs.LAUNCHER)


def identity_of(platform: State) -> ServiceTls:
    found = platform.client_tls
    assert found is not None, "the platform runs without service TLS"
    return found


def channel(target: str, ca: Path, own: ServiceTls | None) -> grpc.aio.Channel:
    """A channel that trusts the platform's CA (so any refusal is the server's) and
    presents `own`'s certificate, or none."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=own.key.read_bytes() if own else None,
        certificate_chain=own.cert.read_bytes() if own else None,
    )
    return grpc.aio.secure_channel(target, credentials)


async def orders_of(engine: AsyncEngine, tenant: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            sa.text("SELECT count(*) FROM orders WHERE tenant_id = :tenant"), {"tenant": tenant}
        )
    return int(count or 0)


async def create_order(chan: grpc.aio.Channel, tenant: str) -> order_pb2.Order:
    stub = order_pb2_grpc.OrderServiceStub(chan)
    reply: order_pb2.Order = await stub.CreateOrder(
        order_pb2.CreateOrderRequest(customer_ref="forged"), metadata=forged(tenant), timeout=5
    )
    return reply


@pytest.fixture
async def refused(engine: AsyncEngine, tenant: str) -> AsyncIterator[None]:
    """The test's calls change nothing: no order of its tenant afterwards."""
    yield
    assert await orders_of(engine, tenant) == 0


def test_through_the_edge_every_service_answers_over_mtls(platform: State, api: Api) -> None:
    assert api.draft()["id"]
    clusters = httpx.get(f"{platform.envoy_admin_url}/stats?filter=ssl.handshake$").text
    handshakes = {
        line.split(".")[1]: int(line.rpartition(": ")[2])
        for line in clusters.splitlines()
        if line.startswith("cluster.")
    }
    for name in topology.clusters():
        assert handshakes.get(name, 0) > 0, f"Envoy made no TLS handshake with {name}"


@pytest.mark.usefixtures("refused")
async def test_forged_metadata_without_a_client_certificate_is_refused(
    platform: State, tenant: str
) -> None:
    own = identity_of(platform)
    async with channel(platform.target("order"), own.ca, None) as chan:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create_order(chan, tenant)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.usefixtures("refused")
async def test_a_client_certificate_of_another_ca_is_refused(
    platform: State, tenant: str, foreign_ca: ServiceTls
) -> None:
    own = identity_of(platform)
    async with channel(platform.target("order"), own.ca, foreign_ca) as chan:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create_order(chan, tenant)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.usefixtures("refused")
async def test_a_plaintext_client_is_refused(platform: State, tenant: str) -> None:
    async with grpc_client.dial(platform.target("order")) as chan:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create_order(chan, tenant)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_the_platforms_client_certificate_is_let_in(
    platform: State, tenant: str, engine: AsyncEngine
) -> None:
    async with grpc_client.dial(platform.target("order"), identity_of(platform)) as chan:
        created = await create_order(chan, tenant)
    assert created.customer_ref == "forged"
    assert await orders_of(engine, tenant) == 1


async def test_every_process_takes_only_platform_certificates(platform: State) -> None:
    own = identity_of(platform)
    request = health_pb2.HealthCheckRequest()
    for process in topology.of_kind(Kind.SERVER, Kind.WORKER):
        for target in platform.targets[process.name]:
            async with grpc_client.dial(target) as plain:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await health_pb2_grpc.HealthStub(plain).Check(request, timeout=5)
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE, process.name
            async with grpc_client.dial(target, own) as chan:
                reply = await health_pb2_grpc.HealthStub(chan).Check(request, timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, process.name


def test_the_run_directory_keeps_private_keys_private(platform: State) -> None:
    for name in certs.names():
        key = certs.files(Path(platform.tls_dir), name).key
        assert key.stat().st_mode & 0o777 == 0o600, name
    ca_key = Path(platform.tls_dir) / certs.CA_DIR / "ca.key"
    assert ca_key.stat().st_mode & 0o777 == 0o600
