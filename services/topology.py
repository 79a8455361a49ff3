"""Every process of the platform, in one table: what it runs, where it listens, what it needs.

The launcher's wiring, the ports `up` claims, Envoy's clusters and routes, the
compose Envoy config, the compose file's drift check and the tests' free ports
are all derived from `PROCESSES`, so adding a service is its package plus one
entry here (docs/ADDING.md). This module imports no service: a process's own
dev settings come from its `dev_env` hook, named by a dotted path and loaded
only by the launcher when it starts that process.

Kinds: `SERVER` is a gRPC server (its services, its health service name);
`WORKER` is a queue consumer with a gRPC health endpoint only; `STUB` is a fake
outside system (`python -m stubs <name>`); `INFRA` is a server the launcher runs
from a pip wheel unless given by URL (PostgreSQL, Redis, the MongoDB-wire
server); `EDGE` is Envoy.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class Kind(enum.Enum):
    SERVER = "gRPC server"
    WORKER = "worker"
    STUB = "stub"
    INFRA = "infrastructure server"
    EDGE = "edge"


@dataclass(frozen=True)
class Port:
    """A port setting and its default (a default outside Linux's ephemeral range,
    32768-60999, so no just-closed outgoing connection can hold it)."""

    setting: str
    default: int
    label: str = ""  # a second port's own name (Envoy's admin interface)


@dataclass(frozen=True)
class Exposed:
    """One gRPC service the edge routes to its process: REST (transcoded) and native gRPC."""

    name: str  # the full gRPC service name
    module: str  # the generated module that defines it
    timeout: str  # Envoy's route timeout
    # Methods (by short name) whose route gets a timeout of its own.
    method_timeouts: Mapping[str, str] = field(default_factory=dict)
    # Methods (by short name) whose REST success is this status unless the service
    # names another (`x-http-code`): the common answer costs the service no
    # initial-metadata operation of its own.
    success_status: Mapping[str, int] = field(default_factory=dict)
    # Methods (by short name) whose REST success carries these headers unless the
    # service sent its own: a read's common answer (a cache hit) then costs its
    # service no initial-metadata operation, and it names only the exceptions.
    success_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


# The product gateway's reads: RFC 9211 Cache-Status of a hit, which the gateway
# leaves to the edge (services/product/servicer_v1.py sends a miss or a stale hit).
PRODUCT_CACHE_HIT = {"cache-status": "shop-products; hit"}
_PRODUCT_READS_V1 = ("ListProducts", "GetProduct", "GetProductInventory")
_PRODUCT_READS_V2 = ("ListProducts", "GetProduct")


@dataclass(frozen=True)
class Replicas:
    """A process `up` starts several of, on consecutive ports from its own."""

    setting: str  # how many
    name_setting: str  # tells each one its name (`<process>-<n>`)
    default: int = 1


@dataclass(frozen=True)
class Process:
    """One process of the platform.

    `needs` are the settings it cannot run without; the launcher supplies each one
    from the process that `provides` it or from its own (`LAUNCHER_SETTINGS`).
    `dev_env` is `module:function`, a `services.kit.dev.DevEnv` owned by the
    service: the dev secrets and settings it needs on this machine.
    """

    name: str  # the process, its log file, its compose service and its Envoy cluster
    label: str  # how `up` and the port check name it
    kind: Kind
    port: Port
    module: str = ""  # `python -m <module>` (servers, workers)
    bind_setting: str = ""  # host:port it listens on (servers, workers)
    health: str = ""  # the gRPC health service `up` and Envoy ask about ("" = the server)
    cluster: bool = False  # an Envoy cluster (every server behind or beside the edge)
    exposes: tuple[Exposed, ...] = ()
    needs: tuple[str, ...] = ()
    provides: str = ""  # the URL setting of this server for the others (stubs, infra)
    # The setting that tells other processes where this gRPC server listens
    # (`host:port`): internal callers such as the order service calling inventory.
    target: str = ""
    replicas: Replicas | None = None
    dev_env: str = ""
    note: str = ""  # the ready banner's remark: {rest_url}, {secrets_file}, {where}
    admin_port: Port | None = None  # Envoy's admin interface
    # The Prometheus endpoint of a server or worker (replicas on consecutive ports).
    metrics_port: Port | None = None

    @property
    def metrics_bind_setting(self) -> str:
        """`<PREFIX>_METRICS_BIND` beside `<PREFIX>_GRPC_BIND`: what ServerConfig reads."""
        return self.bind_setting.replace("_GRPC_BIND", "_METRICS_BIND")

    @property
    def health_bind_setting(self) -> str:
        """`<PREFIX>_HEALTH_BIND`: the plaintext health-only port ServerConfig reads."""
        return self.bind_setting.replace("_GRPC_BIND", "_HEALTH_BIND")

    @property
    def probe_port(self) -> int:
        """The health-only port in a container (compose healthchecks, kubelet probes):
        its gRPC port's default plus PROBE_PORT_OFFSET. The gRPC port itself takes
        platform certificates only, which those probes cannot present."""
        return self.port.default + PROBE_PORT_OFFSET


# A container's plaintext health-only port is its gRPC port plus this (7151 upwards).
PROBE_PORT_OFFSET = 100

# Settings the launcher makes itself for any process that needs them.
LAUNCHER_SETTINGS = ("CURSOR_SECRET", "JWT_ISSUER", "JWT_AUDIENCE")

_GRPC = "{where} (direct gRPC, reflection on)"


def _metrics(setting: str, default: int) -> Port:
    return Port(setting, default, "metrics")


PROCESSES: tuple[Process, ...] = (
    Process(
        "order", "order service", Kind.SERVER, Port("ORDER_GRPC_PORT", 7051),
        module="services.order", bind_setting="ORDER_GRPC_BIND",
        health="shop.order.v1.OrderService", cluster=True,
        # WatchOrder is a long-lived stream (Server-Sent Events through the edge).
        exposes=(
            Exposed(
                "shop.order.v1.OrderService", "shop.order.v1.order_pb2", "30s",
                method_timeouts={"WatchOrder": "0s"},
            ),
            Exposed("shop.order.v1.OrderAdminService", "shop.order.v1.order_pb2", "30s"),
            Exposed(
                "shop.order.v1.NotificationService", "shop.order.v1.notifications_pb2", "10s"
            ),
            Exposed("shop.order.v1.ReportService", "shop.order.v1.reports_pb2", "30s"),
        ),
        needs=("DATABASE_URL", "CURSOR_SECRET", "PRODUCT_GRPC_TARGET", "INVENTORY_GRPC_TARGET"),
        note=_GRPC, metrics_port=_metrics("ORDER_METRICS_PORT", 9151),
    ),
    Process(
        "product", "product gateway", Kind.SERVER, Port("PRODUCT_GRPC_PORT", 7052),
        module="services.product", bind_setting="PRODUCT_GRPC_BIND",
        target="PRODUCT_GRPC_TARGET",
        health="shop.product.v1.ProductService", cluster=True,
        # The gateway bounds every call itself (read and write budgets of a few
        # seconds); 15 s is the backstop.
        exposes=(
            Exposed(
                "shop.product.v1.ProductService", "shop.product.v1.product_pb2", "15s",
                success_headers=dict.fromkeys(_PRODUCT_READS_V1, PRODUCT_CACHE_HIT),
            ),
            Exposed(
                "shop.product.v2.ProductService", "shop.product.v2.product_pb2", "15s",
                success_headers=dict.fromkeys(_PRODUCT_READS_V2, PRODUCT_CACHE_HIT),
            ),
        ),
        needs=("DATABASE_URL", "CURSOR_SECRET", "ERP_URL", "WAREHOUSE_URL",
               "INVENTORY_GRPC_TARGET"),
        note="{where} (v1 and v2)", metrics_port=_metrics("PRODUCT_METRICS_PORT", 9152),
    ),
    Process(
        "user", "user service", Kind.SERVER, Port("USER_GRPC_PORT", 7053),
        module="services.user", bind_setting="USER_GRPC_BIND",
        target="USER_GRPC_TARGET",
        health="shop.user.v1.UserService", cluster=True,
        exposes=(Exposed("shop.user.v1.UserService", "shop.user.v1.user_pb2", "10s"),),
        needs=("DATABASE_URL", "REDIS_URL", "CURSOR_SECRET", "JWT_SIGNING_KEYS", "JWT_ISSUER",
               "JWT_AUDIENCE"),
        dev_env="services.user.dev:dev_env",
        note="{where} (tokens; JWKS at {rest_url}/.well-known/jwks.json)",
        metrics_port=_metrics("USER_METRICS_PORT", 9153),
    ),
    # Envoy's global rate-limit service: a cluster of the edge, not a route.
    Process(
        "ratelimit", "rate-limit service", Kind.SERVER, Port("RATELIMIT_GRPC_PORT", 7054),
        module="services.ratelimit", bind_setting="RATELIMIT_GRPC_BIND",
        health="envoy.service.ratelimit.v3.RateLimitService", cluster=True,
        needs=("REDIS_URL",), note="{where}",
        metrics_port=_metrics("RATELIMIT_METRICS_PORT", 9154),
    ),
    Process(
        "event", "event gateway", Kind.SERVER, Port("EVENT_GRPC_PORT", 7055),
        module="services.event", bind_setting="EVENT_GRPC_BIND",
        health="shop.event.v1.EventService", cluster=True,
        # Ingestion is one Redis round trip; 5 s is generous. An accepted event is
        # 202 (services/event/servicer.py names 200 for a duplicate).
        exposes=(
            Exposed(
                "shop.event.v1.EventService", "shop.event.v1.event_pb2", "5s",
                success_status={"IngestWebhook": 202, "PublishEvent": 202},
            ),
        ),
        needs=("REDIS_URL", "WEBHOOK_SOURCES", "CURSOR_SECRET"),
        dev_env="services.event.dev:dev_env",
        note="{where} (webhooks: POST {rest_url}/v1/events, source 'courier'; "
        "its `webhook_secret` is in {secrets_file})",
        metrics_port=_metrics("EVENT_METRICS_PORT", 9155),
    ),
    Process(
        "event-worker", "event worker", Kind.WORKER, Port("EVENT_WORKER_PORT", 7056),
        module="services.event.worker", bind_setting="EVENT_WORKER_GRPC_BIND",
        needs=("REDIS_URL", "MONGO_URL", "ROUTING_URL"),
        replicas=Replicas("EVENT_WORKERS", "EVENT_WORKER_NAME"), note="{where} (health)",
        metrics_port=_metrics("EVENT_WORKER_METRICS_PORT", 9156),
    ),
    # Moves outbox rows onto queue-kit streams; any number may run (they take turns).
    Process(
        "relay", "outbox relay", Kind.WORKER, Port("RELAY_PORT", 7061),
        module="services.relay", bind_setting="RELAY_GRPC_BIND",
        needs=("DATABASE_URL", "REDIS_URL"), note="{where} (health)",
        metrics_port=_metrics("RELAY_METRICS_PORT", 9161),
    ),
    # The stock ledger; ReservationService is internal (callers on the service port).
    Process(
        "inventory", "inventory service", Kind.SERVER, Port("INVENTORY_GRPC_PORT", 7062),
        module="services.inventory", bind_setting="INVENTORY_GRPC_BIND",
        target="INVENTORY_GRPC_TARGET",
        health="shop.inventory.v1.InventoryService", cluster=True,
        # WatchStock is a long-lived stream (Server-Sent Events through the edge).
        exposes=(
            Exposed(
                "shop.inventory.v1.InventoryService", "shop.inventory.v1.inventory_pb2", "10s",
                method_timeouts={"WatchStock": "0s"},
            ),
        ),
        needs=("DATABASE_URL", "CURSOR_SECRET", "ERP_URL", "WAREHOUSE_URL"),
        metrics_port=_metrics("INVENTORY_METRICS_PORT", 9162),
        dev_env="services.inventory.dev:dev_env", note=_GRPC,
    ),
    # Takes placed orders through stock, payment and fulfilment (the `orders`
    # queue), and reconciles charges whose answer was lost; any number may run.
    Process(
        "order-pipeline", "order pipeline", Kind.WORKER, Port("ORDER_PIPELINE_PORT", 7063),
        module="services.order.pipeline", bind_setting="ORDER_PIPELINE_GRPC_BIND",
        needs=("DATABASE_URL", "REDIS_URL", "INVENTORY_GRPC_TARGET", "PAYMENTS_URL"),
        replicas=Replicas("ORDER_PIPELINES", "ORDER_PIPELINE_NAME", default=1),
        note="{where} (health)",
        metrics_port=_metrics("ORDER_PIPELINE_METRICS_PORT", 9163),
    ),
    # Sends customers' notifications; any number may run (SKIP LOCKED claims).
    Process(
        "notifier", "notifier", Kind.WORKER, Port("NOTIFIER_PORT", 7064),
        module="services.order.notifier", bind_setting="NOTIFIER_GRPC_BIND",
        needs=("DATABASE_URL", "NOTIFY_URL"),
        replicas=Replicas("NOTIFIERS", "NOTIFIER_NAME", default=1), note="{where} (health)",
        metrics_port=_metrics("NOTIFIER_METRICS_PORT", 9164),
    ),
    # Writes report exports as CSV from the `exports` queue; any number may run.
    Process(
        "export-worker", "export worker", Kind.WORKER, Port("EXPORT_WORKER_PORT", 7065),
        module="services.order.exports", bind_setting="EXPORT_WORKER_GRPC_BIND",
        needs=("DATABASE_URL", "REDIS_URL"), note="{where} (health)",
        metrics_port=_metrics("EXPORT_WORKER_METRICS_PORT", 9165),
    ),
    Process(
        "erp", "ERP stub", Kind.STUB, Port("ERP_PORT", 8101), provides="ERP_URL",
        note="{where} (faults: PUT {where}/_admin/faults)",
    ),
    Process(
        "warehouse", "Warehouse stub", Kind.STUB, Port("WAREHOUSE_PORT", 8102),
        provides="WAREHOUSE_URL", note="{where}",
    ),
    Process(
        "routing", "Routing stub", Kind.STUB, Port("ROUTING_PORT", 8103), provides="ROUTING_URL",
        note="{where} (2 s per call; faults: PUT {where}/_admin/faults)",
    ),
    Process(
        "payments", "Payment provider stub", Kind.STUB, Port("PAYMENTS_PORT", 8104),
        provides="PAYMENTS_URL",
        note="{where} (declines, timeouts: PUT {where}/_admin/faults; GET {where}/_admin/ledger)",
    ),
    Process(
        "notifications", "Notification stub", Kind.STUB, Port("NOTIFY_PORT", 8105),
        provides="NOTIFY_URL", note="{where} (sent: GET {where}/_admin/messages)",
    ),
    Process(
        "postgres", "PostgreSQL", Kind.INFRA, Port("POSTGRES_PORT", 15432),
        provides="DATABASE_URL", note="{where}",
    ),
    Process(
        "redis", "Redis", Kind.INFRA, Port("REDIS_PORT", 16379), provides="REDIS_URL",
        note="{where}",
    ),
    Process(
        "mongo", "MongoDB-wire server", Kind.INFRA, Port("MONGO_PORT", 17017),
        provides="MONGO_URL", note="{where}",
    ),
    Process(
        "envoy", "edge (Envoy)", Kind.EDGE, Port("EDGE_PORT", 8080),
        admin_port=Port("ENVOY_ADMIN_PORT", 9901, "Envoy admin"),
    ),
)  # fmt: skip


def ports(processes: Iterable[Process]) -> list[Port]:
    """Every port setting of these processes (Envoy's admin port and metrics ports included)."""
    found: list[Port] = []
    for process in processes:
        found.append(process.port)
        if process.admin_port is not None:
            found.append(process.admin_port)
        if process.metrics_port is not None:
            found.append(process.metrics_port)
    return found


def default_ports(processes: Iterable[Process] | None = None) -> dict[str, int]:
    """Every port setting with its default."""
    return {p.setting: p.default for p in ports(PROCESSES if processes is None else processes)}


def free_ports(processes: Iterable[Process] | None = None) -> dict[str, int]:
    """Every port setting at 0: any free port (tests, benchmarks)."""
    return dict.fromkeys(default_ports(processes), 0)


def of_kind(*kinds: Kind, processes: Iterable[Process] | None = None) -> list[Process]:
    return [p for p in (PROCESSES if processes is None else processes) if p.kind in kinds]


def by_name(name: str, processes: Iterable[Process] | None = None) -> Process:
    for process in PROCESSES if processes is None else processes:
        if process.name == name:
            return process
    raise KeyError(f"no process {name!r} in services/topology.py")


def url_settings(processes: Iterable[Process] | None = None) -> list[str]:
    """The URL settings that name a server to use instead of starting one."""
    return [p.provides for p in (PROCESSES if processes is None else processes) if p.provides]


def target_settings(processes: Iterable[Process] | None = None) -> list[str]:
    """The settings that tell internal callers where a gRPC server listens."""
    return [p.target for p in (PROCESSES if processes is None else processes) if p.target]


def clusters(processes: Iterable[Process] | None = None) -> dict[str, str]:
    """Envoy's gRPC clusters: process name to the health service its checks ask about."""
    chosen = PROCESSES if processes is None else processes
    return {p.name: p.health for p in chosen if p.cluster}


def exposed(processes: Iterable[Process] | None = None) -> list[tuple[Process, Exposed]]:
    """Every gRPC service behind the edge with the process that serves it."""
    chosen = PROCESSES if processes is None else processes
    return [(p, service) for p in chosen for service in p.exposes]


def start_order(processes: Iterable[Process] | None = None) -> list[Process]:
    """The processes in an order where each starts after those providing what it needs
    (and the edge after every cluster); otherwise in table order."""
    pending = list(PROCESSES if processes is None else processes)
    providers = {p.provides: p.name for p in pending if p.provides}
    providers.update({p.target: p.name for p in pending if p.target})
    started: set[str] = set()
    ordered: list[Process] = []

    def ready(process: Process) -> bool:
        if process.kind is Kind.EDGE:
            return all(p.kind is Kind.EDGE for p in pending)
        return all(providers[n] in started for n in process.needs if n in providers)

    while pending:
        process = next((p for p in pending if ready(p)), None)
        if process is None:
            raise ValueError(f"the needs of {', '.join(p.name for p in pending)} form a cycle")
        pending.remove(process)
        started.add(process.name)
        ordered.append(process)
    return ordered
