"""The whole platform on one machine: servers, migrations, services and the edge.

`Platform.up()` starts every component on its own port under a run directory,
waits for each one's health, and records what it started in `state.json` so
that `down` (from any process) stops exactly that. Tests use the same class.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.event.signatures import generate_secret
from services.kit.config import env_int, env_str
from services.launcher import PYTHONPATH, ROOT, edge, edge_routes, infra, ports, procs, stubs
from services.launcher.edge_capacity import EdgeCapacity
from services.launcher.provision import migrate, seed_admin, seed_shipments, signing_key

ORDER_SERVICE = edge_routes.GRPC_CLUSTERS["order"]
PRODUCT_SERVICE = edge_routes.GRPC_CLUSTERS["product"]
USER_SERVICE = edge_routes.GRPC_CLUSTERS["user"]
RATELIMIT_SERVICE = edge_routes.GRPC_CLUSTERS["ratelimit"]
EVENT_SERVICE = edge_routes.GRPC_CLUSTERS["event"]
# The tenant of the stubs' demo catalogue, and its admin (password in secrets.json).
DEMO_TENANT = "demo"
DEMO_ADMIN_EMAIL = "admin@demo.example"
# The demo courier: its webhook secret is in secrets.json, its shipments are seeded.
DEMO_COURIER = "courier"
DEMO_SHIPMENTS = 1000


@dataclass(frozen=True)
class LauncherConfig:
    """Ports and URLs; a port of 0 means 'any free port', a URL means 'use that server'."""

    run_dir: Path
    edge_port: int = 8080
    admin_port: int = 9901
    order_port: int = 50051
    product_port: int = 50052
    user_port: int = 50053
    ratelimit_port: int = 50054
    event_port: int = 50055
    # Event workers' health ports are this one and the next ones.
    event_worker_port: int = 50056
    event_workers: int = 1
    erp_port: int = 8101
    warehouse_port: int = 8102
    routing_port: int = 8103
    postgres_port: int = 55432
    redis_port: int = 56379
    mongo_port: int = 57017
    database_url: str | None = None
    redis_url: str | None = None
    mongo_url: str | None = None
    erp_url: str | None = None
    warehouse_url: str | None = None
    routing_url: str | None = None
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    jwt_issuer: str = "shop-platform"
    jwt_audience: str = "shop-api"
    edge_limits: edge_routes.EdgeLimits = field(default_factory=edge_routes.EdgeLimits)
    edge_capacity: EdgeCapacity = field(default_factory=EdgeCapacity)
    # Settings passed to every service on top of the environment (e.g. tests'
    # shorter breaker timings).
    service_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LauncherConfig:
        return cls(
            run_dir=Path(env_str(env, "RUN_DIR", str(ROOT / ".run" / "local"))).resolve(),
            edge_port=env_int(env, "EDGE_PORT", 8080),
            admin_port=env_int(env, "ENVOY_ADMIN_PORT", 9901),
            order_port=env_int(env, "ORDER_GRPC_PORT", 50051),
            product_port=env_int(env, "PRODUCT_GRPC_PORT", 50052),
            user_port=env_int(env, "USER_GRPC_PORT", 50053),
            ratelimit_port=env_int(env, "RATELIMIT_GRPC_PORT", 50054),
            event_port=env_int(env, "EVENT_GRPC_PORT", 50055),
            event_worker_port=env_int(env, "EVENT_WORKER_PORT", 50056),
            event_workers=env_int(env, "EVENT_WORKERS", 1),
            erp_port=env_int(env, "ERP_PORT", 8101),
            warehouse_port=env_int(env, "WAREHOUSE_PORT", 8102),
            routing_port=env_int(env, "ROUTING_PORT", 8103),
            postgres_port=env_int(env, "POSTGRES_PORT", 55432),
            redis_port=env_int(env, "REDIS_PORT", 56379),
            mongo_port=env_int(env, "MONGO_PORT", 57017),
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            mongo_url=env.get("MONGO_URL") or None,
            erp_url=env.get("ERP_URL") or None,
            warehouse_url=env.get("WAREHOUSE_URL") or None,
            routing_url=env.get("ROUTING_URL") or None,
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
            otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            jwt_issuer=env_str(env, "JWT_ISSUER", "shop-platform"),
            jwt_audience=env_str(env, "JWT_AUDIENCE", "shop-api"),
            edge_limits=edge_routes.EdgeLimits(
                route_rps=env_int(env, "EDGE_ROUTE_RPS", 500),
                credentials_rps=env_int(env, "EDGE_CREDENTIALS_RPS", 10),
            ),
            edge_capacity=EdgeCapacity.from_env(env),
        )


@dataclass
class State:
    """What one `up` started and where it listens (the contents of state.json)."""

    run_dir: str = ""
    rest_url: str = ""
    grpc_target: str = ""
    order_grpc_target: str = ""
    product_grpc_target: str = ""
    user_grpc_target: str = ""
    ratelimit_grpc_target: str = ""
    event_grpc_target: str = ""
    event_worker_targets: list[str] = field(default_factory=list)
    erp_url: str = ""
    warehouse_url: str = ""
    routing_url: str = ""
    database_url: str = ""
    redis_url: str = ""
    mongo_url: str = ""
    envoy_admin_url: str = ""
    logs_dir: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    stop_signals: dict[str, int] = field(default_factory=dict)


def _port(port: int) -> int:
    return port or procs.free_port()


def _secrets(run_dir: Path) -> dict[str, str]:
    """Dev secrets, generated into the run directory on first start (and any that a newer
    platform needs on the next one), never in code."""
    path = run_dir / "secrets.json"
    values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = {
        "postgres_password": 18,
        "redis_password": 18,
        "cursor_secret": 32,
        "demo_admin_password": 18,
    }
    missing = {
        name: secrets.token_urlsafe(size) for name, size in wanted.items() if name not in values
    }
    if "webhook_secret" not in values:
        missing["webhook_secret"] = generate_secret()
    if missing:
        values.update(missing)
    procs.write_private(path, json.dumps(values, indent=2))
    return values


def _grpc_serving(target: str, service: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=1
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class Platform:
    """Starts and stops every component of the platform for one run directory."""

    def __init__(self, config: LauncherConfig) -> None:
        self.config = config
        self.run_dir = config.run_dir
        self.state_path = self.run_dir / "state.json"
        self.state = State()
        self._procs: list[procs.Proc] = []

    def _track(self, proc: procs.Proc) -> None:
        self._procs.append(proc)
        self.state.pids[proc.name] = proc.pid
        self.state.stop_signals[proc.name] = proc.stop_signal
        self._save()

    def _save(self) -> None:
        procs.write_private(self.state_path, json.dumps(asdict(self.state), indent=2))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = PYTHONPATH
        env["LOG_LEVEL"] = self.config.log_level
        env.update(self.config.service_env)
        if self.config.otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.config.otlp_endpoint
        return env

    def preflight(self) -> None:
        """LaunchError, before anything starts, if this run dir's platform runs or a port
        that `up` needs is taken."""
        recorded = self.recorded()
        if recorded is not None and any(procs.alive(pid) for pid in recorded.pids.values()):
            raise procs.LaunchError(
                f"already running from {self.run_dir} (`./shop status` shows where): "
                "run `./shop down` first"
            )
        ports.check_free(self.config)

    def up(self) -> State:
        """Start everything and wait until healthy; on any failure stop what started."""
        self.preflight()
        created = not self.run_dir.exists()
        procs.private_dir(self.run_dir)
        try:
            self._up()
        except BaseException:
            self.down()
            if created:
                self._discard_run_dir()
            raise
        return self.state

    def _discard_run_dir(self) -> None:
        """After a failed first start: remove what it made (the cluster, secrets, data),
        keeping only logs/, which the error message points at."""
        shutil.rmtree(infra.pg_data_dir(self.run_dir), ignore_errors=True)
        for child in self.run_dir.iterdir():
            if child.name == "logs" and any(child.iterdir()):
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.run_dir.rmdir()

    def _up(self) -> None:
        cfg, env, state = self.config, self._env(), self.state
        keys = _secrets(self.run_dir)
        state.run_dir = str(self.run_dir)
        state.logs_dir = str(self.run_dir / "logs")
        if cfg.database_url:
            state.database_url = cfg.database_url
        else:
            proc, state.database_url = infra.start_postgres(
                self.run_dir, _port(cfg.postgres_port), keys["postgres_password"], env
            )
            self._track(proc)
        if cfg.redis_url:
            state.redis_url = cfg.redis_url
        else:
            proc, state.redis_url = infra.start_redis(
                self.run_dir, _port(cfg.redis_port), keys["redis_password"], env
            )
            self._track(proc)
        if cfg.mongo_url:
            state.mongo_url = cfg.mongo_url
        else:
            proc, state.mongo_url = infra.start_mongo(self.run_dir, _port(cfg.mongo_port), env)
            self._track(proc)
        env.update(
            DATABASE_URL=state.database_url, REDIS_URL=state.redis_url, MONGO_URL=state.mongo_url
        )
        self._save()
        migrate(env)

        order_port = _port(cfg.order_port)
        state.order_grpc_target = f"{infra.HOST}:{order_port}"
        self._start_service(
            "order", ORDER_SERVICE, state.order_grpc_target,
            {**env, "ORDER_GRPC_BIND": state.order_grpc_target, "CURSOR_SECRET": keys["cursor_secret"]},
        )  # fmt: skip

        state.erp_url = cfg.erp_url or self._start_stub("erp", cfg.erp_port, env)
        state.warehouse_url = cfg.warehouse_url or self._start_stub(
            "warehouse", cfg.warehouse_port, env
        )
        product_port = _port(cfg.product_port)
        state.product_grpc_target = f"{infra.HOST}:{product_port}"
        self._start_service(
            "product", PRODUCT_SERVICE, state.product_grpc_target,
            {**env, "PRODUCT_GRPC_BIND": state.product_grpc_target,
             "CURSOR_SECRET": keys["cursor_secret"], "ERP_URL": state.erp_url,
             "WAREHOUSE_URL": state.warehouse_url},
        )  # fmt: skip

        ratelimit_port = _port(cfg.ratelimit_port)
        state.ratelimit_grpc_target = f"{infra.HOST}:{ratelimit_port}"
        self._start_service(
            "ratelimit", RATELIMIT_SERVICE, state.ratelimit_grpc_target,
            {**env, "RATELIMIT_GRPC_BIND": state.ratelimit_grpc_target},
        )  # fmt: skip

        user_port = _port(cfg.user_port)
        state.user_grpc_target = f"{infra.HOST}:{user_port}"
        user_env = {
            **env, "USER_GRPC_BIND": state.user_grpc_target, "CURSOR_SECRET": keys["cursor_secret"],
            "JWT_SIGNING_KEYS": str(signing_key(self.run_dir)),
            "JWT_ISSUER": cfg.jwt_issuer, "JWT_AUDIENCE": cfg.jwt_audience,
        }  # fmt: skip
        self._start_service("user", USER_SERVICE, state.user_grpc_target, user_env)
        seed_admin(user_env, DEMO_TENANT, DEMO_ADMIN_EMAIL, keys["demo_admin_password"])

        state.routing_url = cfg.routing_url or self._start_stub("routing", cfg.routing_port, env)
        seed_shipments(env, DEMO_TENANT, DEMO_SHIPMENTS)
        event_port = _port(cfg.event_port)
        state.event_grpc_target = f"{infra.HOST}:{event_port}"
        sources = {DEMO_COURIER: {"tenant": DEMO_TENANT, "secrets": [keys["webhook_secret"]]}}
        event_env = {
            **env, "EVENT_GRPC_BIND": state.event_grpc_target, "ROUTING_URL": state.routing_url,
            "WEBHOOK_SOURCES": env.get("WEBHOOK_SOURCES") or json.dumps(sources),
            "CURSOR_SECRET": keys["cursor_secret"],
        }  # fmt: skip
        self._start_service("event", EVENT_SERVICE, state.event_grpc_target, event_env)
        for i in range(cfg.event_workers):
            port = _port(cfg.event_worker_port and cfg.event_worker_port + i)
            target = f"{infra.HOST}:{port}"
            state.event_worker_targets.append(target)
            worker_env = {**event_env, "EVENT_WORKER_GRPC_BIND": target,
                          "EVENT_WORKER_NAME": f"event-worker-{i + 1}"}  # fmt: skip
            self._track(start_service(f"event-worker-{i + 1}", "", target, worker_env,
                                      self.run_dir, module="services.event.worker"))  # fmt: skip

        settings = edge.EdgeSettings(
            edge_address=infra.HOST,
            edge_port=_port(cfg.edge_port),
            admin_address=infra.HOST,
            admin_port=_port(cfg.admin_port),
            upstreams={
                "order": edge_routes.Endpoint(infra.HOST, order_port),
                "product": edge_routes.Endpoint(infra.HOST, product_port),
                "user": edge_routes.Endpoint(infra.HOST, user_port),
                "ratelimit": edge_routes.Endpoint(infra.HOST, ratelimit_port),
                "event": edge_routes.Endpoint(infra.HOST, event_port),
            },
            jwt_issuer=cfg.jwt_issuer,
            jwt_audience=cfg.jwt_audience,
            limits=cfg.edge_limits,
            capacity=cfg.edge_capacity,
            otlp_endpoint=cfg.otlp_endpoint,
        )
        self._track(edge.start_envoy(infra.executable("envoy"), settings, self.run_dir, env))
        state.rest_url = f"http://{infra.HOST}:{settings.edge_port}"
        state.grpc_target = f"{infra.HOST}:{settings.edge_port}"
        state.envoy_admin_url = f"http://{infra.HOST}:{settings.admin_port}"
        self._save()

    def _start_service(self, name: str, service: str, target: str, env: dict[str, str]) -> None:
        self._track(start_service(name, service, target, env, self.run_dir))

    def _start_stub(self, name: str, port: int, env: dict[str, str]) -> str:
        proc, url = stubs.start_stub(name, self.run_dir, _port(port), env)
        self._track(proc)
        return url

    def down(self) -> bool:
        """Stop what `up` started (in this process or another), newest first; False when
        nothing was recorded as started."""
        if not self.state_path.exists():
            return False
        recorded = State(**json.loads(self.state_path.read_text()))
        for name, pid in reversed(list(recorded.pids.items())):
            procs.stop_pid(pid, recorded.stop_signals.get(name, 15))
        for proc in self._procs:
            procs.reap(proc)
        self.state_path.unlink()
        return True

    def recorded(self) -> State | None:
        """What the last `up` of this run directory recorded (state.json), if any."""
        if not self.state_path.exists():
            return None
        return State(**json.loads(self.state_path.read_text()))

    def status(self) -> dict[str, str]:
        """Each recorded component and whether it still runs."""
        recorded = self.recorded()
        if recorded is None:
            return {}
        return {
            name: f"pid {pid} " + ("running" if procs.alive(pid) else "STOPPED")
            for name, pid in recorded.pids.items()
        }

    def exited(self) -> list[procs.Proc]:
        """Components started by this process that have stopped on their own."""
        return [p for p in self._procs if p.popen.poll() is not None]


def start_service(
    name: str,
    service: str,
    target: str,
    env: Mapping[str, str],
    run_dir: Path,
    *,
    module: str | None = None,
) -> procs.Proc:
    """Run `python -m services.<name>` (or `module`) until its health service reports
    `service` SERVING ("" for the whole server)."""
    proc = procs.start(
        name, [sys.executable, "-m", module or f"services.{name}"], log_dir=run_dir / "logs",
        env=dict(env), cwd=ROOT,
    )  # fmt: skip
    with procs.stop_on_error(proc):
        procs.wait_until(
            proc,
            lambda: _grpc_serving(target, service),
            what=f"the {name} service to report SERVING",
        )
    return proc
