"""The kit's service identity (services/kit/tls.py) on real servers on port 0.

A server with `ServerConfig.tls` takes only clients with a certificate of its CA,
and `grpc_client.dial` with the same settings gets in, carrying the identity
metadata the interceptor reads; everything else fails the TLS handshake. The
health-only port answers plaintext health and nothing else. Half a TLS config,
or files that cannot be read, stop the process with a ConfigError.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from shop.order.v1.order_pb2 import GetOrderRequest as Msg

from services import topology
from services.kit import grpc_client, identity, tls
from services.kit.config import ConfigError, ServerConfig, ServiceTls
from services.kit.server import Registration, create_server, serve_health
from services.launcher import PYTHONPATH, certs, infra, procs
from services.launcher.platform import start_service
from services.user import admin

SERVICE = "test.identity.v1.Echo"
HEALTH = health_pb2.HealthCheckRequest()


async def whoami(request: Msg, ctx: Any) -> Msg:
    """The caller as the service sees it (the metadata the interceptor read)."""
    caller = identity.of(ctx)
    return Msg(id=f"{caller.user_id}@{caller.tenant_id}")


def _echo(server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        whoami, request_deserializer=Msg.FromString, response_serializer=Msg.SerializeToString
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"Who": handler})]
    )


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    certs.issue(directory, ["order", "envoy", "user", "launcher"], days=1)
    return directory


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> ServiceTls:
    directory = tmp_path_factory.mktemp("foreign")
    certs.issue(directory, ["envoy"], days=1)
    return certs.files(directory, "envoy")


@pytest.fixture
async def secured(issued: Path) -> AsyncIterator[str]:
    """A server on port 0 serving mTLS with the `order` identity; its target."""
    server, port, _ = await create_server(
        [Registration(SERVICE, _echo, enforce_access=False)],
        "127.0.0.1:0",
        certs.files(issued, "order"),
    )
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def who(chan: grpc.aio.Channel) -> str:
    call = chan.unary_unary(
        f"/{SERVICE}/Who", request_serializer=Msg.SerializeToString,
        response_deserializer=Msg.FromString,
    )  # fmt: skip
    acting = grpc_client.Acting("t1", "forged-admin", admin=True)
    reply: Msg = await call(Msg(id="x"), metadata=acting.metadata(), timeout=5)
    return reply.id


async def refused(chan: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await who(chan)
    await chan.close()
    return raised.value.code()


async def test_a_platform_certificate_gets_in_with_its_metadata(secured: str, issued: Path) -> None:
    async with grpc_client.dial(secured, certs.files(issued, "envoy")) as chan:
        assert await who(chan) == "forged-admin@t1"


async def test_a_plaintext_client_is_refused(secured: str) -> None:
    assert await refused(grpc_client.dial(secured)) is grpc.StatusCode.UNAVAILABLE


async def test_a_client_without_a_certificate_is_refused(secured: str, issued: Path) -> None:
    ca = certs.files(issued, "envoy").ca.read_bytes()
    chan = grpc.aio.secure_channel(secured, grpc.ssl_channel_credentials(root_certificates=ca))
    assert await refused(chan) is grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_of_another_ca_is_refused(
    secured: str, issued: Path, foreign: ServiceTls
) -> None:
    # It trusts the platform's CA, so the refusal is the server's.
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.files(issued, "envoy").ca.read_bytes(),
        private_key=foreign.key.read_bytes(),
        certificate_chain=foreign.cert.read_bytes(),
    )
    chan = grpc.aio.secure_channel(secured, credentials)
    assert await refused(chan) is grpc.StatusCode.UNAVAILABLE


async def test_a_server_of_another_ca_is_not_trusted(secured: str, foreign: ServiceTls) -> None:
    # The kit's client checks the server too: a listener with a foreign certificate
    # never receives the caller's metadata.
    assert await refused(grpc_client.dial(secured, foreign)) is grpc.StatusCode.UNAVAILABLE


async def test_the_health_only_port_answers_health_in_plaintext_and_nothing_else(
    issued: Path,
) -> None:
    server, port, health = await create_server(
        [Registration(SERVICE, _echo, enforce_access=False)],
        "127.0.0.1:0",
        certs.files(issued, "order"),
    )
    config = ServerConfig("127.0.0.1:0", "INFO", None, 1.0, health_bind="127.0.0.1:0")
    probes = await serve_health(config, health)
    assert probes is not None
    probe_server, probe_port = probes
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_port}") as plain:
            reply = await health_pb2_grpc.HealthStub(plain).Check(HEALTH, timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert await refused_plain(plain) is grpc.StatusCode.UNIMPLEMENTED
            await health.enter_graceful_shutdown()
            reply = await health_pb2_grpc.HealthStub(plain).Check(HEALTH, timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # The gRPC port itself still takes no plaintext client.
        assert await refused(grpc_client.dial(f"127.0.0.1:{port}")) is grpc.StatusCode.UNAVAILABLE
    finally:
        await probe_server.stop(0)
        await server.stop(0)


async def refused_plain(chan: grpc.aio.Channel) -> grpc.StatusCode:
    """What the health-only port says to anything but health (the echo, reflection)."""
    codes = set()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await who(chan)
    codes.add(raised.value.code())
    stub = reflection_pb2_grpc.ServerReflectionStub(chan)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        ):
            pass
    codes.add(raised.value.code())
    assert len(codes) == 1, codes
    return codes.pop()


def test_half_a_tls_config_is_refused(issued: Path) -> None:
    own = certs.files(issued, "order")
    with pytest.raises(ConfigError, match="SERVICE_TLS_KEY must be set too"):
        ServerConfig.from_env(
            "ORDER", {"SERVICE_TLS_CA": str(own.ca), "SERVICE_TLS_CERT": str(own.cert)}
        )
    assert ServerConfig.from_env("ORDER", {}).tls is None
    assert ServerConfig.from_env("ORDER", own.env()).tls == own


async def test_an_unreadable_certificate_stops_the_server_with_the_setting_named(
    issued: Path, tmp_path: Path
) -> None:
    own = certs.files(issued, "order")
    missing = ServiceTls(own.ca, tmp_path / "nope.crt", own.key)
    with pytest.raises(ConfigError, match="SERVICE_TLS_CERT: cannot read"):
        await create_server([], "127.0.0.1:0", missing)
    with pytest.raises(ConfigError, match="SERVICE_TLS_CERT: cannot read"):
        tls.channel_credentials(missing)


async def test_a_service_process_with_tls_takes_only_platform_clients_and_probes_in_plaintext(
    issued: Path, tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    user = topology.by_name("user")
    target = f"{infra.HOST}:{procs.free_port()}"
    probes = f"{infra.HOST}:{procs.free_port()}"
    key = tmp_path / "signing.pem"
    assert admin.main(["keygen", str(key)]) == 0
    env = {
        **os.environ, "PYTHONPATH": PYTHONPATH, "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url, "CURSOR_SECRET": "integration-cursor-secret",
        "JWT_SIGNING_KEYS": str(key), "JWT_ISSUER": "shop-platform", "JWT_AUDIENCE": "shop-api",
        user.bind_setting: target, user.health_bind_setting: probes,
        **certs.files(issued, "user").env(),
    }  # fmt: skip
    # Readiness as the launcher asks it: over mTLS with its own certificate.
    proc = start_service(
        "user", user.health, target, env, tmp_path, identity=certs.files(issued, "launcher")
    )
    asked = health_pb2.HealthCheckRequest(service=user.health)
    try:
        assert await refused(grpc_client.dial(target)) is grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(probes) as plain:
            reply = await health_pb2_grpc.HealthStub(plain).Check(asked, timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        procs.stop(proc)
    assert '"tls": true' in proc.log.read_text()
