"""Server bootstrap shared by every gRPC service.

`create_server` binds (port 0 in tests), installs tracing and the platform
interceptor, and registers the standard health service and reflection, so
every server is the same to Envoy, the launcher and grpcurl.
`serve` runs it until SIGTERM/SIGINT and stops gracefully; `run` is a whole
service's `main`: logs, tracing, metrics, build, serve. `run_worker` is the same
for a queue worker, whose server carries only health (for the launcher and
probes). Both serve the process's Prometheus metrics on `<PREFIX>_METRICS_BIND`
when it is set (the launcher and docker-compose.yml always set it).

With service TLS configured (`ServerConfig.tls`, services/kit/tls.py) the gRPC
port takes only clients holding a certificate of the platform CA; a probe that
cannot present one (a kubelet, a compose healthcheck) asks the plaintext port
on `<PREFIX>_HEALTH_BIND`, which serves the same health service and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from services.kit import identity, logs, metrics, tls, tracing
from services.kit.config import ServerConfig, ServiceTls
from services.kit.interceptors import QUIET_PREFIXES, PlatformInterceptor

log = logging.getLogger("shop.server")

# Request metadata a server accepts (soft and hard limit alike: between the two
# gRPC refuses at random). Above the edge's request-header limit plus what Envoy
# adds (services/launcher/edge_capacity.py), so an oversize request is always
# refused by the edge with a 431, never here.
MAX_METADATA_BYTES = 64 * 1024


@dataclass(frozen=True)
class Registration:
    """One gRPC service to host: its full name and how to add it to a server."""

    name: str
    add_to: Callable[[grpc.aio.Server], None]
    # Whether the interceptor enforces the methods' shop.api.v1.access option.
    # False only for infrastructure protocols no user calls (Envoy's rate-limit
    # service), whose contracts cannot carry the option.
    enforce_access: bool = True


def _server_spans() -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    """OpenTelemetry's SERVER span per RPC, continuing the caller's trace, while spans are
    exported; health checks and reflection (the launcher's, Envoy's and probes', every
    few seconds) get none. Without an exporter no interceptor at all: the platform
    interceptor puts an unrecorded span context in the caller's trace, which costs a
    fraction of an unsampled span."""
    if not tracing.exporting():
        return []
    quiet = filters.any_of(*(filters.service_prefix(p[1:]) for p in QUIET_PREFIXES))
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[type-arg, no-untyped-call]
        filter_=filters.negate(quiet)
    )
    return [interceptor]


async def create_server(
    services: Sequence[Registration],
    bind: str = "127.0.0.1:0",
    service_tls: ServiceTls | None = None,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """Build, bind (mTLS with `service_tls`, else plaintext) and start a server; returns
    it, its port and its health servicer."""
    access = identity.method_access(s.name for s in services if s.enforce_access)
    server = grpc.aio.server(
        interceptors=[*_server_spans(), PlatformInterceptor(access)],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ],
    )
    for service in services:
        service.add_to(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.name for s in services]
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    if service_tls is None:
        port = server.add_insecure_port(bind)
    else:
        port = server.add_secure_port(bind, tls.server_credentials(service_tls))
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer


async def serve_health(
    config: ServerConfig, health_servicer: HealthServicer
) -> tuple[grpc.aio.Server, int] | None:
    """The plaintext health-only port, when the config names one: the same servicer as
    the gRPC port's (NOT_SERVING there is NOT_SERVING here), no other service; the
    server and its port."""
    if config.health_bind is None:
        return None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(config.health_bind)
    await server.start()
    log.info("health", extra={"health_port": port})
    return server, port


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(
    server: grpc.aio.Server,
    health_servicer: HealthServicer,
    *,
    grace: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    on_drain: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then report NOT_SERVING, end long-lived streams
    (`on_drain`), let the other calls finish for up to `grace` s, clean up."""
    stop = stop_on_signals()
    await stop.wait()
    log.info("stopping", extra={"grace_s": grace})
    await health_servicer.enter_graceful_shutdown()
    if on_drain is not None:
        await on_drain()
    await server.stop(grace)
    if on_stop is not None:
        await on_stop()


class HostedApp(Protocol):
    """What a service's composition root returns: its services and its clean-up.

    An app that serves long-lived streams also has `async def drain()`, which ends
    them when the server stops, so they do not hold the stop for the whole grace.
    """

    @property
    def registrations(self) -> list[Registration]: ...

    async def close(self) -> None: ...


async def serve_metrics(config: ServerConfig) -> metrics.Endpoint | None:
    """The process's metrics endpoint, when its config names one."""
    if config.metrics_bind is None:
        return None
    return await metrics.serve(config.metrics_bind)


async def run(name: str, config: ServerConfig, build: Callable[[], HostedApp]) -> None:
    """A service process: configure logs and tracing, build the app, serve until told to stop."""
    logs.configure(name, config.log_level)
    tracing.configure(name, config.otlp_endpoint)
    app = build()
    endpoint = await serve_metrics(config)
    server, port, health = await create_server(app.registrations, config.bind, config.tls)
    probes = await serve_health(config, health)
    log.info("listening", extra={"port": port, "tls": config.tls is not None})
    try:
        await serve(
            server,
            health,
            grace=config.shutdown_grace_s,
            on_stop=app.close,
            on_drain=getattr(app, "drain", None),
        )
    finally:
        if probes is not None:
            await probes[0].stop(0)
        if endpoint is not None:
            await endpoint.close()


class HostedWorker(Protocol):
    """What a worker's composition root returns: its work loop and its clean-up."""

    async def run(self, stop: asyncio.Event) -> None: ...

    async def close(self) -> None: ...


async def run_worker(name: str, config: ServerConfig, build: Callable[[], HostedWorker]) -> None:
    """A worker process: logs, tracing, a health endpoint, work until told to stop, drain."""
    logs.configure(name, config.log_level)
    tracing.configure(name, config.otlp_endpoint)
    app = build()
    endpoint = await serve_metrics(config)
    server, port, health = await create_server([], config.bind, config.tls)
    probes = await serve_health(config, health)
    log.info("working", extra={"health_port": port, "tls": config.tls is not None})
    stop = stop_on_signals()
    try:
        # Returns once `stop` is set and the in-flight messages are finished and acked.
        await app.run(stop)
    finally:
        await health.enter_graceful_shutdown()
        await server.stop(0)
        if probes is not None:
            await probes[0].stop(0)
        await app.close()
        if endpoint is not None:
            await endpoint.close()
    log.info("stopped")
