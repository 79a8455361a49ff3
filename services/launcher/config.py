"""What one `up` is told (LauncherConfig) and what it records (State, state.json), both
keyed by the topology's processes and settings (services/topology.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from services import topology
from services.kit.config import ConfigError, ServiceTls, env_int, env_str
from services.launcher import ROOT, certs
from services.launcher.edge_capacity import EdgeCapacity
from services.launcher.edge_limits import EdgeLimits, Quota
from services.topology import Process


@dataclass(frozen=True)
class LauncherConfig:
    """Ports, replicas and URLs of the topology's processes: a port of 0 means 'any free
    port', a URL means 'use that server' instead of starting one."""

    run_dir: Path
    # By port setting (ORDER_GRPC_PORT, EDGE_PORT, ...); one not named has its default.
    ports: Mapping[str, int] = field(default_factory=topology.default_ports)
    # By process name (event-worker); one not named has its default.
    replicas: Mapping[str, int] = field(default_factory=dict)
    # By URL setting (DATABASE_URL, ERP_URL, ...).
    urls: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    jwt_issuer: str = "shop-platform"
    jwt_audience: str = "shop-api"
    edge_limits: EdgeLimits = field(default_factory=EdgeLimits)
    edge_capacity: EdgeCapacity = field(default_factory=EdgeCapacity)
    # Settings passed to every service on top of the environment (e.g. tests'
    # shorter breaker timings).
    service_env: Mapping[str, str] = field(default_factory=dict)
    # `up --observability`: an OTLP receiver (unless `otlp_endpoint` names a collector)
    # and Prometheus (when installed) beside the platform; a port of 0 is any free one.
    observability: bool = False
    otlp_receiver_port: int = 4317
    prometheus_port: int = 9090
    # mTLS between Envoy, the services and the launcher (services/kit/tls.py): with
    # `tls_dir` the certificates there (services/launcher/certs.py's layout), else a
    # CA and certificates issued into the run directory on every start.
    service_tls: bool = True
    tls_dir: Path | None = None

    def port(self, setting: str) -> int:
        """The port of a port setting of the topology."""
        if setting in self.ports:
            return self.ports[setting]
        return topology.default_ports()[setting]

    def replica_count(self, process: Process) -> int:
        if process.replicas is None:
            return 1
        return self.replicas.get(process.name, process.replicas.default)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LauncherConfig:
        return cls(
            run_dir=Path(env_str(env, "RUN_DIR", str(ROOT / ".run" / "local"))).resolve(),
            ports={
                port.setting: env_int(env, port.setting, port.default)
                for port in topology.ports(topology.PROCESSES)
            },
            replicas={
                p.name: env_int(env, p.replicas.setting, p.replicas.default)
                for p in topology.PROCESSES
                if p.replicas is not None
            },
            urls=given_urls(env),
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
            otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            jwt_issuer=env_str(env, "JWT_ISSUER", "shop-platform"),
            jwt_audience=env_str(env, "JWT_AUDIENCE", "shop-api"),
            edge_limits=EdgeLimits(
                route_rps=env_int(env, "EDGE_ROUTE_RPS", 500),
                credentials_rps=env_int(env, "EDGE_CREDENTIALS_RPS", 10),
                address=Quota(env_int(env, "EDGE_ADDRESS_RPS", 200)),
                user=Quota(env_int(env, "EDGE_USER_RPS", 50)),
                callers=env_int(env, "EDGE_LIMIT_CALLERS", 100_000),
            ),
            edge_capacity=EdgeCapacity.from_env(env),
            otlp_receiver_port=env_int(env, "OTLP_RECEIVER_PORT", 4317),
            prometheus_port=env_int(env, "PROMETHEUS_PORT", 9090),
            service_tls=_on_off(env, "SERVICE_TLS"),
            tls_dir=Path(env["SERVICE_TLS_DIR"]).resolve() if env.get("SERVICE_TLS_DIR") else None,
        )

    @classmethod
    def on_free_ports(
        cls, run_dir: Path, env: Mapping[str, str] | None = None, **settings: Any
    ) -> LauncherConfig:
        """Every process on a free port (tests, benchmarks: beside a running `./shop up`),
        using the servers whose URLs `env` gives."""
        return cls(
            run_dir=run_dir, ports=topology.free_ports(), urls=given_urls(env or {}), **settings
        )


def _on_off(env: Mapping[str, str], name: str) -> bool:
    value = env_str(env, name, "on").lower()
    if value not in ("on", "off"):
        raise ConfigError(f"{name} must be on or off, got {value!r}")
    return value == "on"


def given_urls(env: Mapping[str, str]) -> dict[str, str]:
    """The servers `env` names by URL (DATABASE_URL, ERP_URL, ...), to use instead of starting."""
    return {setting: env[setting] for setting in topology.url_settings() if env.get(setting)}


@dataclass
class State:
    """What one `up` started and where it listens (the contents of state.json)."""

    run_dir: str = ""
    rest_url: str = ""
    grpc_target: str = ""
    envoy_admin_url: str = ""
    logs_dir: str = ""
    # gRPC targets by process name (one per replica); URLs by setting (DATABASE_URL, ...).
    targets: dict[str, list[str]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    # Prometheus endpoints by process name (one per replica).
    metrics: dict[str, list[str]] = field(default_factory=dict)
    # What `up --observability` started or would need, by name (traces, Prometheus).
    observability: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    stop_signals: dict[str, int] = field(default_factory=dict)
    # Where the service identities are (services/launcher/certs.py); "": plaintext.
    tls_dir: str = ""

    @classmethod
    def from_json(cls, text: str) -> State:
        """A recorded state; what another version recorded beyond these fields is left
        out (`down` needs only the pids)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    def identity(self, name: str) -> ServiceTls | None:
        """The certificate files of one identity (a process, `envoy`, `launcher`);
        None when the platform runs plaintext."""
        return certs.files(Path(self.tls_dir), name) if self.tls_dir else None

    @property
    def client_tls(self) -> ServiceTls | None:
        """The launcher's own identity: what its checks and the tests dial services with."""
        return self.identity(certs.LAUNCHER)

    def target(self, process: str) -> str:
        """Where a process listens for gRPC (its first replica's target)."""
        return (self.targets.get(process) or [""])[0]

    @property
    def order_grpc_target(self) -> str:
        return self.target("order")

    @property
    def product_grpc_target(self) -> str:
        return self.target("product")

    @property
    def user_grpc_target(self) -> str:
        return self.target("user")

    @property
    def ratelimit_grpc_target(self) -> str:
        return self.target("ratelimit")

    @property
    def event_grpc_target(self) -> str:
        return self.target("event")

    @property
    def event_worker_targets(self) -> list[str]:
        return self.targets.get("event-worker", [])

    @property
    def database_url(self) -> str:
        return self.urls.get("DATABASE_URL", "")

    @property
    def redis_url(self) -> str:
        return self.urls.get("REDIS_URL", "")

    @property
    def mongo_url(self) -> str:
        return self.urls.get("MONGO_URL", "")

    @property
    def erp_url(self) -> str:
        return self.urls.get("ERP_URL", "")

    @property
    def warehouse_url(self) -> str:
        return self.urls.get("WAREHOUSE_URL", "")

    @property
    def routing_url(self) -> str:
        return self.urls.get("ROUTING_URL", "")
