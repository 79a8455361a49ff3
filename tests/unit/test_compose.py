"""The container setup (docker-compose.yml, Dockerfile, envoy/compose.yaml), checked offline.

No Docker engine is needed: envoy/compose.yaml must be exactly what
`services.launcher.compose` renders and pass `envoy --mode validate`; docker-compose.yml
must parse, take every secret from the environment, start things in order, feed the
services the settings their config classes read and mount what Envoy loads; the
healthcheck commands are run against a real gRPC health server and a real Envoy.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services import topology
from services.event.config import EventConfig, WorkerProcessConfig
from services.kit.config import ServerConfig
from services.launcher import ROOT, certs, compose, infra, procs
from services.order.config import OrderConfig
from services.product.config import ProductConfig
from services.ratelimit.config import RateLimitConfig
from services.user.config import UserConfig
from tests.edges import tracer_endpoint
from tests.upstream_admin import running_stub

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# One-shot tasks beside the topology's processes: migrations, the signing key, the
# service certificates, demo data.
TASKS = {"migrate", "keys", "certs", "seed-shipments"}
# Beside the topology too: the OpenTelemetry Collector every span goes to.
COLLECTOR = compose.COLLECTOR.host
SERVICES = set(compose.expected_services()) | TASKS | {COLLECTOR}
GRPC_SERVICES = topology.clusters()
SETTINGS = compose.settings()
# `$$` (a literal dollar) or `${NAME...}`; anything else after a `$` is an error.
DOLLAR = re.compile(r"\$(\$|\{[^}]*\}|\w*)")
REQUIRED = re.compile(r"\$\{(\w+):\?([^}]+)\}")
DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY", re.IGNORECASE)
URL_PASSWORD = re.compile(r"://[^/:@\s]+:([^@\s]+)@")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), f"{COMPOSE_FILE} is not a YAML mapping"
    return loaded


def strings(node: object) -> Iterator[str]:
    """Every string value in a parsed YAML document (mapping keys are not interpolated)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from the mapping or the `KEY=value` list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str) -> str:
    """What compose makes of a value when required variables are set to `<NAME>`."""
    value = REQUIRED.sub(lambda m: f"<{m[1]}>", value)
    return DEFAULTED.sub(lambda m: m[2], value)


def healthcheck(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list), "healthcheck.test must be the exec (list) form"
    assert test[0] == "CMD", test
    return [str(part) for part in test[1:]]


# --- envoy/compose.yaml ----------------------------------------------------------------


def test_envoy_config_is_rendered_from_the_template() -> None:
    assert compose.OUTPUT.read_text() == compose.render_compose_edge(), (
        "envoy/compose.yaml differs from envoy/edge.yaml rendered for compose: run "
        "`PYTHONPATH=.:gen .venv/bin/python -m services.launcher.compose` and commit the result"
    )


def test_envoy_config_listens_on_all_interfaces() -> None:
    text = compose.OUTPUT.read_text()
    assert "socket_address: {address: 0.0.0.0, port_value: 8080}" in text
    assert '"socket_address": {"address": "order", "port_value": 7051}' in text
    # Envoy fetches the JWKS from its own listener inside the container.
    assert "http://127.0.0.1:8080/.well-known/jwks.json" in text


# --- docker-compose.yml ----------------------------------------------------------------


def test_compose_has_every_service(spec: dict[str, Any]) -> None:
    assert set(spec["services"]) == SERVICES


def test_compose_has_every_process_of_the_topology(spec: dict[str, Any]) -> None:
    assert drift(spec, compose.expected_services()) == []


def test_compose_postgres_has_room_for_every_pool(spec: dict[str, Any]) -> None:
    """The pools keep every connection a burst opens, so the image's default of 100
    would not hold them all; compose's PostgreSQL allows what the launcher's does."""
    command = spec["services"]["postgres"]["command"]
    assert command[0] == "postgres"
    settings = dict(
        arg.split("=", 1)
        for flag, arg in zip(command[1::2], command[2::2], strict=True)
        if flag == "-c"
    )
    assert int(settings["max_connections"]) >= infra.PG_MAX_CONNECTIONS


def drift(spec: dict[str, Any], expected: dict[str, compose.ComposeService]) -> list[str]:
    """How docker-compose.yml differs from what the topology says of each process."""
    services = spec["services"]
    found: list[str] = []
    for name, want in expected.items():
        if name not in services:
            found.append(f"{name}: no compose service")
            continue
        service = services[name]
        if want.command is not None and tuple(service.get("command", ())) != want.command:
            found.append(f"{name}: command {service.get('command')} is not {list(want.command)}")
        env = environment(service)
        for setting, value in want.environment.items():
            if setting not in env:
                found.append(f"{name}: no {setting}")
            elif value is not None and interpolate(env[setting]) != value:
                found.append(f"{name}: {setting} is {env[setting]!r}, not {value!r}")
        if want.health_port is not None:
            check = healthcheck(service)[-1]
            if f"127.0.0.1:{want.health_port}" not in check:
                found.append(f"{name}: the healthcheck does not dial port {want.health_port}")
            if want.health_service is not None and f"service='{want.health_service}'" not in check:
                found.append(f"{name}: the healthcheck does not ask for {want.health_service!r}")
        if want.published is not None and service.get("ports") != [want.published]:
            found.append(f"{name}: publishes {service.get('ports')}, not {want.published}")
    return found


def test_the_drift_check_sees_a_changed_port(spec: dict[str, Any]) -> None:
    expected = compose.expected_services()
    order = expected["order"]
    moved = dataclasses.replace(
        order, environment={**order.environment, "ORDER_GRPC_BIND": "0.0.0.0:1"}, health_port=1
    )
    assert drift(spec, {"order": moved}) == [
        "order: ORDER_GRPC_BIND is '0.0.0.0:7051', not '0.0.0.0:1'",
        "order: the healthcheck does not dial port 1",
    ]


def test_every_variable_is_required_or_defaulted(spec: dict[str, Any]) -> None:
    bad = [
        f"{match[0]!r} in {value!r}"
        for value in strings(spec)
        for match in DOLLAR.finditer(value)
        if match[1] != "$"
        and not REQUIRED.fullmatch(match[0])
        and not DEFAULTED.fullmatch(match[0])
    ]
    assert not bad, "use ${VAR:?message} (secrets) or ${VAR:-default}: " + ", ".join(bad)


def test_no_literal_secrets(spec: dict[str, Any]) -> None:
    for name, service in spec["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED.fullmatch(value), f"{name}.{key} must be ${{{key}:?...}}: {value!r}"
    for value in strings(spec):
        for password in URL_PASSWORD.findall(value):
            assert REQUIRED.fullmatch(password), f"literal password in URL {value!r}"


def test_services_start_in_order(spec: dict[str, Any]) -> None:
    services = spec["services"]

    def condition(service: str, dependency: str) -> str:
        return str(services[service]["depends_on"][dependency]["condition"])

    assert condition("migrate", "postgres") == "service_healthy"
    assert condition("order", "migrate") == "service_completed_successfully"
    assert condition("envoy", "order") == "service_healthy"
    for upstream in GRPC_SERVICES:
        assert condition("envoy", upstream) == "service_healthy"
    assert condition("user", "keys") == "service_completed_successfully"
    assert condition("product", "migrate") == "service_completed_successfully"
    assert condition("product", "erp") == condition("product", "warehouse") == "service_healthy"
    assert services["migrate"]["command"] == [
        "python", "-m", "alembic", "-c", "services/migrations/alembic.ini", "upgrade", "head",
    ]  # fmt: skip
    assert services["migrate"].get("restart", "no") == "no"
    assert condition("event-worker", "seed-shipments") == "service_completed_successfully"
    assert condition("event-worker", "routing") == "service_healthy"
    # The collector's image holds the collector alone: nothing to run a check with.
    for name in SERVICES - TASKS - {COLLECTOR}:
        assert healthcheck(services[name]), f"{name} has no healthcheck"


def test_app_services_use_the_project_image(spec: dict[str, Any]) -> None:
    services = spec["services"]
    ours = topology.of_kind(topology.Kind.SERVER, topology.Kind.WORKER, topology.Kind.STUB)
    app = TASKS | {p.name for p in ours}
    assert {services[name]["build"] for name in app} == {"."}
    assert len({services[name]["image"] for name in app}) == 1
    for process in topology.of_kind(topology.Kind.SERVER, topology.Kind.WORKER):
        assert services[process.name]["command"] == ["python", "-m", process.module]
    for stub in topology.of_kind(topology.Kind.STUB):
        assert services[stub.name]["command"][:4] == ["python", "-m", "stubs", stub.name]


def test_product_environment_is_what_its_config_reads(spec: dict[str, Any]) -> None:
    env = {k: interpolate(v) for k, v in environment(spec["services"]["product"]).items()}
    config = ProductConfig.from_env(env)
    assert config.server.bind == f"0.0.0.0:{SETTINGS.upstreams['product'].port}"
    assert config.database_url == "postgresql://shop:<POSTGRES_PASSWORD>@postgres:5432/shop"
    assert config.cursor_secret == b"<CURSOR_SECRET>"
    stubs = spec["services"]
    assert config.erp_url == f"http://erp:{stubs['erp']['command'][-1]}"
    assert config.warehouse_url == f"http://warehouse:{stubs['warehouse']['command'][-1]}"


def test_order_environment_is_what_its_config_reads(spec: dict[str, Any]) -> None:
    env = {k: interpolate(v) for k, v in environment(spec["services"]["order"]).items()}
    config = OrderConfig.from_env(env)
    assert config.server.bind == f"0.0.0.0:{SETTINGS.upstreams['order'].port}"
    assert config.database_url == "postgresql://shop:<POSTGRES_PASSWORD>@postgres:5432/shop"
    assert config.cursor_secret == b"<CURSOR_SECRET>"
    assert config.server.otlp_endpoint == compose.collector_url()
    migrate_env = {k: interpolate(v) for k, v in environment(spec["services"]["migrate"]).items()}
    assert migrate_env["DATABASE_URL"] == config.database_url
    postgres_env = environment(spec["services"]["postgres"])
    assert interpolate(postgres_env["POSTGRES_PASSWORD"]) == "<POSTGRES_PASSWORD>"
    assert (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_DB"]) == ("shop", "shop")


def test_redis_asks_every_client_for_the_password(spec: dict[str, Any]) -> None:
    redis = spec["services"]["redis"]
    command = [interpolate(part) for part in redis["command"]]
    assert command[command.index("--requirepass") + 1] == "<REDIS_PASSWORD>"
    assert "--appendonly" in command
    assert interpolate(environment(redis)["REDISCLI_AUTH"]) == "<REDIS_PASSWORD>"  # healthcheck
    urls = {
        name: interpolate(env["REDIS_URL"])
        for name, service in spec["services"].items()
        if "REDIS_URL" in (env := environment(service))
    }
    assert urls, "some services use Redis"
    assert set(urls.values()) == {"redis://:<REDIS_PASSWORD>@redis:6379/0"}, urls


def test_event_environment_is_what_its_configs_read(spec: dict[str, Any]) -> None:
    services = spec["services"]
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    sources = json.dumps({"courier": {"tenant": "demo", "secrets": [secret]}})
    gateway_env = {k: interpolate(v) for k, v in environment(services["event"]).items()}
    assert gateway_env["WEBHOOK_SOURCES"] == "<WEBHOOK_SOURCES>"
    gateway = EventConfig.from_env({**gateway_env, "WEBHOOK_SOURCES": sources})
    assert gateway.server.bind == f"0.0.0.0:{SETTINGS.upstreams['event'].port}"
    assert gateway.redis_url == "redis://:<REDIS_PASSWORD>@redis:6379/0"
    assert gateway.default_source == "courier"
    worker_env = {k: interpolate(v) for k, v in environment(services["event-worker"]).items()}
    worker = WorkerProcessConfig.from_env({**worker_env, "WEBHOOK_SOURCES": sources})
    worker_port = topology.by_name("event-worker").port.default
    assert worker.server.bind == f"0.0.0.0:{worker_port}"
    assert worker.routing_url == f"http://routing:{services['routing']['command'][-1]}"
    assert worker.mongo_url == "mongodb://mongo:27017/shop"
    seed = services["seed-shipments"]["command"]
    assert seed[seed.index("--mongo-url") + 1] == worker.mongo_url
    # The worker's healthcheck asks the health-only port its config binds.
    assert worker.server.health_bind == f"0.0.0.0:{worker_port + topology.PROBE_PORT_OFFSET}"
    assert (
        f":{worker_port + topology.PROBE_PORT_OFFSET}" in healthcheck(services["event-worker"])[-1]
    )


def test_envoy_mounts_what_its_config_loads(spec: dict[str, Any]) -> None:
    envoy = spec["services"]["envoy"]
    command = envoy["command"]
    assert command[0] == "envoy"
    assert command[command.index("--concurrency") + 1] == "1"
    mounts = {}
    for volume in envoy["volumes"]:
        source, target, *_ = volume.split(":")
        if source == "certs":  # the named volume of the service certificates
            continue
        assert (ROOT / source).is_file(), f"envoy mounts missing {source}"
        mounts[source] = target
    assert mounts == {
        "./envoy/compose.yaml": command[command.index("-c") + 1],
        "./envoy/edge.lua": SETTINGS.lua_path,
        "./gen/descriptor.binpb": SETTINGS.descriptor_path,
    }
    assert [str(p).rsplit(":", 1)[-1] for p in envoy["ports"]] == [str(SETTINGS.edge_port)]


def test_compose_config_with_the_docker_cli(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or run_check([docker, "compose", "version"]) != 0:
        pytest.skip("no `docker compose` CLI")
    env_file = tmp_path / "test.env"
    env_file.write_text(
        "POSTGRES_PASSWORD=test-only\nREDIS_PASSWORD=test-only\nCURSOR_SECRET=test-only\n"
    )
    result = subprocess.run(
        [docker, "compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- traces: Envoy and every process to the collector -------------------------------------


ENV_REFERENCE = re.compile(r"\$\{env:(\w+)\}")


def test_envoy_starts_every_trace_and_sends_it_to_the_collector(spec: dict[str, Any]) -> None:
    config = yaml.safe_load(compose.OUTPUT.read_text())
    assert tracer_endpoint(config) == compose.COLLECTOR
    assert spec["services"]["envoy"]["depends_on"][COLLECTOR] == {"condition": "service_started"}


def test_the_tracer_check_sees_a_config_without_one() -> None:
    untraced = dataclasses.replace(compose.settings(), otlp_endpoint=None)
    assert tracer_endpoint(yaml.safe_load(compose.render_compose_edge(untraced))) is None


def test_every_process_sends_its_spans_to_the_collector(spec: dict[str, Any]) -> None:
    services = spec["services"]
    for process in topology.of_kind(topology.Kind.SERVER, topology.Kind.WORKER):
        service = services[process.name]
        config = ServerConfig.from_env(
            process.bind_setting.removesuffix("_GRPC_BIND"),
            {k: interpolate(v) for k, v in environment(service).items()},
        )
        assert config.otlp_endpoint == compose.collector_url(), process.name
        assert service["depends_on"][COLLECTOR] == {"condition": "service_started"}, process.name


def collector_config(spec: dict[str, Any], **settings: str) -> dict[str, Any]:
    """The collector's config file as docker-compose.yml mounts it, with its `${env:...}`
    references resolved from the service's environment (its defaults, or `settings`)
    and parsed as YAML, as the collector does."""
    service = spec["services"][COLLECTOR]
    [flag] = service["command"]
    path = flag.removeprefix("--config=")
    mounts = dict(reversed(v.split(":")[:2]) for v in service["volumes"])
    assert ROOT / mounts[path] == compose.COLLECTOR_CONFIG
    env = {k: interpolate(v) for k, v in environment(service).items()} | settings
    text = compose.COLLECTOR_CONFIG.read_text()
    missing = set(ENV_REFERENCE.findall(text)) - set(env)
    assert not missing, f"{COLLECTOR} is given no {missing}"
    loaded = yaml.safe_load(ENV_REFERENCE.sub(lambda m: env[m[1]], text))
    assert isinstance(loaded, dict)
    return loaded


def test_the_collector_takes_otlp_and_exports_every_span(spec: dict[str, Any]) -> None:
    assert spec["services"][COLLECTOR]["image"].startswith("otel/opentelemetry-collector:")
    config = collector_config(spec)
    grpc_endpoint = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc_endpoint == f"0.0.0.0:{compose.COLLECTOR.port}"
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert set(pipeline["processors"]) <= set(config["processors"])
    assert pipeline["exporters"] == ["debug"]  # the default: the collector's own log
    # The other choice, on to a tracing backend, names an exporter the file defines.
    forward = collector_config(spec, OTEL_COLLECTOR_EXPORTER="otlp")
    assert forward["service"]["pipelines"]["traces"]["exporters"] == ["otlp"]
    assert forward["exporters"]["otlp"] == {"endpoint": "jaeger:4317", "tls": {"insecure": True}}


# --- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_builds_one_non_root_image() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert "ENV PYTHONPATH=/app:/app/gen" in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "Dockerfile has no USER"
    assert users[-1] not in {"root", "0"}
    assert lines[-1] == 'CMD ["python", "-m", "services.order"]'
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked() -> dict[str, tuple[str, str | None]]:
    """The lock's packages: normalised name -> (version, environment marker)."""
    pins: dict[str, tuple[str, str | None]] = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name, version, marker = match.groups()
            pins[canonical(name)] = (version, marker)
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_installs_the_lock_with_hashes() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    assert "COPY requirements.lock ./" in lines
    assert any(
        line.startswith("RUN pip install --require-hashes --no-deps -r requirements.lock")
        for line in lines
    )
    assert not any(re.match(r"RUN pip install \.", line) for line in lines)
    entries = [line for line in LOCK.read_text().splitlines() if PIN.match(line)]
    text = LOCK.read_text()
    for entry in entries:
        following = text[text.index(entry) + len(entry) :].lstrip()
        assert following.startswith("--hash=sha256:"), f"no hash for {entry}"


def test_the_lock_holds_every_runtime_pin() -> None:
    import tomllib

    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name, version = requirement.split("==")
        name = canonical(name.split("[")[0])
        assert name in pins, f"{name} is pinned in pyproject.toml but not in requirements.lock"
        assert pins[name][0] == version, f"{name}: pyproject {version}, lock {pins[name][0]}"


def test_the_tests_run_with_the_locked_versions() -> None:
    """What the suite runs with is what the image ships (markers for other Pythons aside)."""
    from importlib import metadata

    from packaging.markers import Marker

    for name, (version, marker) in locked().items():
        if marker and not Marker(marker).evaluate():
            continue
        assert metadata.version(name) == version, f"{name}: installed {metadata.version(name)}"


# --- healthchecks, run for real ------------------------------------------------------------


def run_check(command: list[str]) -> int:
    return subprocess.run(command, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize(
    ("service", "name", "port"),
    [
        (name, GRPC_SERVICES[name], f":{topology.by_name(name).probe_port}")
        for name in GRPC_SERVICES
    ],
)
def test_service_healthcheck_reads_grpc_health(
    spec: dict[str, Any], service: str, name: str, port: str
) -> None:
    command = healthcheck(spec["services"][service])
    assert command[0] == "python"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        local = [sys.executable, *command[1:-1], command[-1].replace(port, f":{bound}")]
        assert local[-1] != command[-1], f"healthcheck does not dial 127.0.0.1{port}"
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        assert run_check(local) == 0
        servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert run_check(local) != 0
    finally:
        server.stop(None)


@pytest.mark.parametrize("stub", [p.name for p in topology.of_kind(topology.Kind.STUB)])
def test_stub_healthcheck_reads_the_admin_health(
    spec: dict[str, Any], stub: str, tmp_path: Path
) -> None:
    command = healthcheck(spec["services"][stub])
    port = spec["services"][stub]["command"][-1]
    free = procs.free_port()
    local = [sys.executable, *command[1:-1], command[-1].replace(f":{port}/", f":{free}/")]
    assert local[-1] != command[-1], f"healthcheck does not ask port {port}"
    assert run_check(local) != 0  # nothing listens yet
    with running_stub(stub, tmp_path, port=free):
        assert run_check(local) == 0


def test_envoy_healthcheck_sees_ready(spec: dict[str, Any], tmp_path: Path) -> None:
    command = healthcheck(spec["services"]["envoy"])
    if shutil.which(command[0]) is None:
        pytest.skip(f"no {command[0]} here")
    admin_port = procs.free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        compose.render_compose_edge(
            compose.settings_here(edge_port=procs.free_port(), admin_port=admin_port)
        )
    )
    local = [*command[:-1], command[-1].replace("/9901", f"/{admin_port}")]
    assert local[-1] != command[-1], "healthcheck does not ask 127.0.0.1:9901"
    assert run_check(local) != 0  # nothing listens yet
    # `order` does not resolve here; Envoy still becomes ready (the container does too).
    with (tmp_path / "envoy.log").open("w") as log:
        envoy = subprocess.Popen(
            [infra.executable("envoy"), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
             "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while run_check(local) != 0:
                assert envoy.poll() is None, (tmp_path / "envoy.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "envoy healthcheck never passed"
                time.sleep(0.2)
        finally:
            envoy.terminate()
            envoy.wait(timeout=15)


def test_user_environment_is_what_its_config_reads(spec: dict[str, Any]) -> None:
    user = spec["services"]["user"]
    config = UserConfig.from_env({k: interpolate(v) for k, v in environment(user).items()})
    assert config.server.bind == f"0.0.0.0:{SETTINGS.upstreams['user'].port}"
    assert (config.jwt_issuer, config.jwt_audience) == (
        SETTINGS.jwt_issuer,
        SETTINGS.jwt_audience,
    )
    # The key the `keys` service generates into the shared volume is the one it signs with.
    keygen = spec["services"]["keys"]["command"]
    assert [str(p) for p in config.signing_keys] == [keygen[keygen.index("keygen") + 1]]
    assert {v.split(":")[0] for v in user["volumes"]} == {
        v.split(":")[0] for v in spec["services"]["keys"]["volumes"]
    } | {"certs"}


def test_ratelimit_environment_is_what_its_config_reads(spec: dict[str, Any]) -> None:
    env = {k: interpolate(v) for k, v in environment(spec["services"]["ratelimit"]).items()}
    config = RateLimitConfig.from_env(env)
    assert config.server.bind == f"0.0.0.0:{SETTINGS.upstreams['ratelimit'].port}"
    assert config.rules == RateLimitConfig.from_env({"REDIS_URL": "redis://x"}).rules


# --- service identity (mTLS) --------------------------------------------------------------


def test_every_process_serves_mtls_with_its_own_certificate(spec: dict[str, Any]) -> None:
    services = spec["services"]
    tasks = services["certs"]
    command = tasks["command"]
    assert command[:3] == ["python", "-m", "services.launcher.certs"]
    issued_into = command[3]
    assert [f"certs:{issued_into}"] == tasks["volumes"]
    for process in topology.of_kind(topology.Kind.SERVER, topology.Kind.WORKER):
        service = services[process.name]
        config = ServerConfig.from_env(
            process.bind_setting.removesuffix("_GRPC_BIND"),
            {k: interpolate(v) for k, v in environment(service).items()},
        )
        assert config.tls == certs.files(compose.TLS_ROOT, process.name), process.name
        assert config.health_bind == f"0.0.0.0:{process.probe_port}"
        assert f"certs:{compose.TLS_ROOT}:ro" in service["volumes"], process.name
        condition = service["depends_on"]["certs"]["condition"]
        assert condition == "service_completed_successfully", process.name


def test_envoy_dials_every_service_over_mtls(spec: dict[str, Any]) -> None:
    envoy = spec["services"]["envoy"]
    assert f"certs:{compose.TLS_ROOT}:ro" in envoy["volumes"]
    assert envoy["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    # The image's entrypoint runs Envoy as the uid that owns the certificates.
    uid = re.search(r"--uid (\d+)", DOCKERFILE.read_text())
    assert uid is not None
    assert str(environment(envoy)["ENVOY_UID"]) == uid[1]
    config = yaml.safe_load(compose.OUTPUT.read_text())
    own = certs.files(compose.TLS_ROOT, certs.EDGE)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name in GRPC_SERVICES:
        socket = clusters[name]["transport_socket"]["typed_config"]
        common = socket["common_tls_context"]
        assert common["alpn_protocols"] == ["h2"], name
        assert common["tls_certificates"] == [
            {"certificate_chain": {"filename": str(own.cert)},
             "private_key": {"filename": str(own.key)}}
        ]  # fmt: skip
        validation = common["validation_context"]
        assert validation["trusted_ca"] == {"filename": str(own.ca)}
        assert validation["match_typed_subject_alt_names"] == [
            {"san_type": "DNS", "matcher": {"exact": name}}
        ]
