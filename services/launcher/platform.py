"""The whole platform on one machine: servers, migrations, services and the edge.

`Platform.up()` starts every process of the topology (services/topology.py) on
its own port under a run directory, in dependency order, waits for each one's
health, and records what it started in `state.json` so that `down` (from any
process) stops exactly that. Tests use the same class.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services import topology
from services.kit import dev, tls
from services.kit.config import TLS_SETTINGS, ServiceTls
from services.launcher import (
    PYTHONPATH,
    ROOT,
    certs,
    edge,
    edge_routes,
    infra,
    observability,
    ports,
    procs,
    stubs,
)
from services.launcher.config import LauncherConfig, State, given_urls
from services.launcher.provision import migrate, seed_admin, seed_shipments
from services.topology import Kind, Process

__all__ = ["LauncherConfig", "Platform", "State", "given_urls", "service_channel", "start_service"]

# The tenant of the stubs' demo catalogue, and its admin (password in secrets.json).
DEMO_TENANT = dev.DEMO_TENANT
DEMO_ADMIN_EMAIL = "admin@demo.example"
# The demo courier's shipments are seeded (the event service's dev_env makes its secret).
DEMO_SHIPMENTS = 1000
# The launcher's own secrets in secrets.json (name: bytes of randomness); each service
# makes its own in its dev_env hook.
LAUNCHER_SECRETS = {
    "postgres_password": 18,
    "redis_password": 18,
    "cursor_secret": 32,
    "demo_admin_password": 18,
}


def _port(port: int) -> int:
    return port or procs.free_port()


def _secrets(run_dir: Path) -> dict[str, str]:
    """Dev secrets, generated into the run directory on first start (and any that a newer
    platform needs on the next one), never in code."""
    makers = {
        name: functools.partial(secrets.token_urlsafe, size)
        for name, size in LAUNCHER_SECRETS.items()
    }
    return dev.stored_secrets(run_dir, makers)


def dev_env_hook(dotted: str) -> dev.DevEnv:
    """A process's `dev_env` hook from its `module:function` name."""
    module, _, name = dotted.partition(":")
    hook: dev.DevEnv = getattr(importlib.import_module(module), name)
    return hook


InfraStarter = Callable[[Path, int, Mapping[str, str], dict[str, str]], tuple[procs.Proc, str]]
# How each infrastructure server of the topology starts: (run dir, port, secrets, env).
INFRA: dict[str, InfraStarter] = {
    "postgres": lambda run, port, keys, env: infra.start_postgres(
        run, port, keys["postgres_password"], env
    ),
    "redis": lambda run, port, keys, env: infra.start_redis(run, port, keys["redis_password"], env),
    "mongo": lambda run, port, keys, env: infra.start_mongo(run, port, env),
}


def service_channel(target: str, identity: ServiceTls | None) -> grpc.Channel:
    """A blocking channel to a platform service, with `identity` (the launcher's) when
    the platform runs mTLS: its readiness checks, and scripts and tests that call a
    service directly."""
    if identity is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, tls.channel_credentials(identity))


def _grpc_serving(target: str, service: str, identity: ServiceTls | None) -> bool:
    with service_channel(target, identity) as chan:
        reply = health_pb2_grpc.HealthStub(chan).Check(
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
        # Where spans go: the configured collector, or the receiver `up` starts.
        self._otlp_endpoint = config.otlp_endpoint

    def _track(self, proc: procs.Proc) -> None:
        self._procs.append(proc)
        self.state.pids[proc.name] = proc.pid
        self.state.stop_signals[proc.name] = proc.stop_signal
        self._save()

    def _save(self) -> None:
        procs.write_private(self.state_path, json.dumps(asdict(self.state), indent=2))

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in TLS_SETTINGS}
        env["PYTHONPATH"] = PYTHONPATH
        env["LOG_LEVEL"] = self.config.log_level
        env.update(self.config.service_env)
        if self._otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self._otlp_endpoint
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
        if self.config.observability:
            self._start_traces()
        cfg, env, state = self.config, self._env(), self.state
        keys = _secrets(self.run_dir)
        if cfg.service_tls:
            state.tls_dir = str(self._identities())
        state.run_dir = str(self.run_dir)
        state.logs_dir = str(self.run_dir / "logs")
        order = topology.start_order()
        for process in order:
            if process.kind is Kind.INFRA:
                state.urls[process.provides] = self._start_infra(process, keys, env)
        env.update(state.urls)
        self._save()
        migrate(env)
        seed_admin(env, DEMO_TENANT, DEMO_ADMIN_EMAIL, keys["demo_admin_password"])
        seed_shipments(env, DEMO_TENANT, DEMO_SHIPMENTS)
        made = {
            "CURSOR_SECRET": keys["cursor_secret"],
            "JWT_ISSUER": cfg.jwt_issuer,
            "JWT_AUDIENCE": cfg.jwt_audience,
        }
        for process in order:
            if process.kind is Kind.STUB:
                state.urls[process.provides] = cfg.urls.get(process.provides) or self._start_stub(
                    process.name, cfg.port(process.port.setting), env
                )
            elif process.kind in (Kind.SERVER, Kind.WORKER):
                provided = {**made, **state.urls}
                needed = {n: provided[n] for n in process.needs if n in provided}
                self._start_process(process, {**env, **needed})
                if process.target:
                    made[process.target] = state.target(process.name)
            elif process.kind is Kind.EDGE:
                self._start_edge(process, env)
        if cfg.observability:
            self._start_prometheus(env)
        self._save()

    def _start_traces(self) -> None:
        """The OTLP receiver, unless spans go to a collector the environment names."""
        if self._otlp_endpoint:
            self.state.observability["traces"] = (
                f"OTLP to {self._otlp_endpoint} (OTEL_EXPORTER_OTLP_ENDPOINT)"
            )
            return
        env = {**os.environ, "PYTHONPATH": PYTHONPATH}
        proc, endpoint = observability.start_receiver(
            self.run_dir, self.config.otlp_receiver_port, env
        )
        self._track(proc)
        self._otlp_endpoint = endpoint
        self.state.observability["traces"] = (
            f"OTLP receiver {endpoint}, spans in {self.run_dir / observability.TRACES_FILE}; "
            + observability.JAEGER_HINT
        )

    def _start_prometheus(self, env: dict[str, str]) -> None:
        binary = observability.prometheus_binary()
        if binary is None:
            hint = observability.prometheus_hint(self.run_dir, self.state)
            self.state.observability["Prometheus"] = hint
            return
        proc, url = observability.start_prometheus(
            binary, self.run_dir, self.config.prometheus_port, self.state, env
        )
        self._track(proc)
        self.state.observability["Prometheus"] = f"{url} (targets: {url}/targets)"

    def _identities(self) -> Path:
        """The directory of every process's certificate: the configured one, or a CA and
        certificates issued now into the run directory (fresh on every start)."""
        if self.config.tls_dir is not None:
            missing = certs.missing(self.config.tls_dir)
            if missing:
                raise procs.LaunchError(
                    f"SERVICE_TLS_DIR lacks {', '.join(map(str, missing))}: "
                    "issue them with `./shop certs DIR`"
                )
            return self.config.tls_dir
        directory = self.run_dir / "tls"
        certs.issue(directory, days=certs.UP_DAYS)
        return directory

    def _start_infra(self, process: Process, keys: Mapping[str, str], env: dict[str, str]) -> str:
        """An infrastructure server's URL: the one configured, or the one started here."""
        given = self.config.urls.get(process.provides)
        if given:
            return given
        if process.name not in INFRA:
            raise procs.LaunchError(
                f"the launcher cannot start {process.label}: set {process.provides}"
            )
        port = _port(self.config.port(process.port.setting))
        proc, url = INFRA[process.name](self.run_dir, port, keys, env)
        self._track(proc)
        return url

    def _start_process(self, process: Process, env: dict[str, str]) -> None:
        """A server or worker (each replica on the next port), with its dev settings, once
        its health service reports SERVING."""
        if process.dev_env:
            env.update(dev_env_hook(process.dev_env)(self.run_dir, env))
        missing = [name for name in process.needs if not env.get(name)]
        if missing:
            raise procs.LaunchError(f"{process.label} needs {', '.join(missing)}")
        base = self.config.port(process.port.setting)
        metrics_base = self.config.port(process.metrics_port.setting) if process.metrics_port else 0
        targets = self.state.targets.setdefault(process.name, [])
        for i in range(self.config.replica_count(process)):
            target = f"{infra.HOST}:{_port(base and base + i)}"
            targets.append(target)
            name, own = process.name, {process.bind_setting: target}
            identity = self.state.identity(process.name)
            if identity is not None:
                own.update(identity.env())
            if process.metrics_port is not None:
                scrape = f"{infra.HOST}:{_port(metrics_base and metrics_base + i)}"
                own[process.metrics_bind_setting] = scrape
                self.state.metrics.setdefault(process.name, []).append(f"http://{scrape}/metrics")
            if process.replicas is not None:
                name = f"{process.name}-{i + 1}"
                own[process.replicas.name_setting] = name
            self._track(
                start_service(
                    name,
                    process.health,
                    target,
                    {**env, **own},
                    self.run_dir,
                    module=process.module,
                    identity=self.state.client_tls,
                )
            )

    def _start_edge(self, process: Process, env: dict[str, str]) -> None:
        cfg, state = self.config, self.state
        admin = process.admin_port
        settings = edge.EdgeSettings(
            edge_address=infra.HOST,
            edge_port=_port(cfg.port(process.port.setting)),
            admin_address=infra.HOST,
            admin_port=_port(cfg.port(admin.setting)) if admin else procs.free_port(),
            upstreams={
                name: edge_routes.Endpoint.of(state.target(name)) for name in topology.clusters()
            },
            jwt_issuer=cfg.jwt_issuer,
            jwt_audience=cfg.jwt_audience,
            limits=cfg.edge_limits,
            capacity=cfg.edge_capacity,
            otlp_endpoint=self._otlp_endpoint,
            upstream_tls=state.identity(certs.EDGE),
        )
        self._track(edge.start_envoy(infra.executable("envoy"), settings, self.run_dir, env))
        state.rest_url = f"http://{infra.HOST}:{settings.edge_port}"
        state.grpc_target = f"{infra.HOST}:{settings.edge_port}"
        state.envoy_admin_url = f"http://{infra.HOST}:{settings.admin_port}"

    def _start_stub(self, name: str, port: int, env: dict[str, str]) -> str:
        proc, url = stubs.start_stub(name, self.run_dir, _port(port), env)
        self._track(proc)
        return url

    def down(self) -> bool:
        """Stop what `up` started (in this process or another), newest first; False when
        nothing was recorded as started."""
        if not self.state_path.exists():
            return False
        recorded = State.from_json(self.state_path.read_text())
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
        return State.from_json(self.state_path.read_text())

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
    identity: ServiceTls | None = None,
) -> procs.Proc:
    """Run `python -m services.<name>` (or `module`) until its health service reports
    `service` SERVING ("" for the whole server), asked with `identity` when it serves mTLS."""
    proc = procs.start(
        name, [sys.executable, "-m", module or f"services.{name}"], log_dir=run_dir / "logs",
        env=dict(env), cwd=ROOT,
    )  # fmt: skip
    with procs.stop_on_error(proc):
        procs.wait_until(
            proc,
            lambda: _grpc_serving(target, service, identity),
            what=f"the {name} service to report SERVING",
        )
    return proc
