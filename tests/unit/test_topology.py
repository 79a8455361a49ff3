"""The topology (services/topology.py) is the one list of the platform's processes: the real
table matches the platform's wiring, and a new entry reaches every place derived from it."""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import topology
from services.event import dev as event_dev
from services.event.config import EventConfig, WorkerProcessConfig
from services.inventory.config import InventoryConfig
from services.kit import dev
from services.kit.config import ConfigError, ServiceTls
from services.launcher import ROOT, compose, edge_policy, edge_routes, ports
from services.launcher.__main__ import endpoints
from services.launcher.edge_limits import EdgeLimits
from services.launcher.platform import LauncherConfig, State, dev_env_hook
from services.order.config import OrderConfig
from services.order.exports.config import ExportWorkerConfig
from services.order.notifier.config import NotifierConfig
from services.order.pipeline.config import PipelineConfig
from services.product.config import ProductConfig
from services.ratelimit.config import RateLimitConfig
from services.relay.config import RelayProcessConfig
from services.topology import Exposed, Kind, Port, Process, Replicas
from services.user.config import UserConfig
from tests.unit.test_compose import drift

EPHEMERAL = range(32768, 61000)
# A server and a worker of the kinds the next issues add, one entry each.
LOYALTY = Process(
    "loyalty", "loyalty service", Kind.SERVER, Port("LOYALTY_GRPC_PORT", 7063),
    module="services.loyalty", bind_setting="LOYALTY_GRPC_BIND",
    health="shop.loyalty.v1.LoyaltyService", cluster=True,
    exposes=(Exposed("shop.loyalty.v1.LoyaltyService", "shop.loyalty.v1.loyalty_pb2",
                     "7s", {"Redeem": "2s"}),),
    needs=("DATABASE_URL", "CURSOR_SECRET"), note="{where} (points)",
)  # fmt: skip
DIGEST = Process(
    "digest", "digest worker", Kind.WORKER, Port("DIGEST_PORT", 7071), module="services.digest",
    bind_setting="DIGEST_GRPC_BIND", needs=("DATABASE_URL", "REDIS_URL"),
    replicas=Replicas("DIGEST_WORKERS", "DIGEST_WORKER_NAME", default=2), note="{where} (health)",
)  # fmt: skip


@pytest.fixture
def extended(monkeypatch: pytest.MonkeyPatch) -> None:
    """The topology with LOYALTY and DIGEST added, for one test."""
    monkeypatch.setattr(topology, "PROCESSES", (*topology.PROCESSES, LOYALTY, DIGEST))


# --- the real table -------------------------------------------------------------------------


def test_the_edge_clusters_are_the_services_and_their_health_services() -> None:
    assert topology.clusters() == {
        "order": "shop.order.v1.OrderService",
        "product": "shop.product.v1.ProductService",
        "user": "shop.user.v1.UserService",
        "ratelimit": "envoy.service.ratelimit.v3.RateLimitService",
        "event": "shop.event.v1.EventService",
        "inventory": "shop.inventory.v1.InventoryService",
    }


def test_the_edge_routes_every_public_service_with_its_timeout() -> None:
    assert [(s.name, s.module, s.cluster, s.timeout) for s in edge_policy.services()] == [
        ("shop.order.v1.OrderService", "shop.order.v1.order_pb2", "order", "30s"),
        ("shop.order.v1.OrderAdminService", "shop.order.v1.order_pb2", "order", "30s"),
        (
            "shop.order.v1.NotificationService",
            "shop.order.v1.notifications_pb2",
            "order",
            "10s",
        ),
        ("shop.order.v1.ReportService", "shop.order.v1.reports_pb2", "order", "30s"),
        ("shop.product.v1.ProductService", "shop.product.v1.product_pb2", "product", "15s"),
        ("shop.product.v2.ProductService", "shop.product.v2.product_pb2", "product", "15s"),
        ("shop.user.v1.UserService", "shop.user.v1.user_pb2", "user", "10s"),
        ("shop.event.v1.EventService", "shop.event.v1.event_pb2", "event", "5s"),
        (
            "shop.inventory.v1.InventoryService",
            "shop.inventory.v1.inventory_pb2",
            "inventory",
            "10s",
        ),
    ]


def test_every_port_has_one_default_outside_the_ephemeral_range() -> None:
    defaults = topology.default_ports()
    assert defaults == {
        "ORDER_GRPC_PORT": 7051,
        "PRODUCT_GRPC_PORT": 7052,
        "USER_GRPC_PORT": 7053,
        "RATELIMIT_GRPC_PORT": 7054,
        "EVENT_GRPC_PORT": 7055,
        "EVENT_WORKER_PORT": 7056,
        "RELAY_PORT": 7061,
        "ORDER_METRICS_PORT": 9151,
        "PRODUCT_METRICS_PORT": 9152,
        "USER_METRICS_PORT": 9153,
        "RATELIMIT_METRICS_PORT": 9154,
        "EVENT_METRICS_PORT": 9155,
        "EVENT_WORKER_METRICS_PORT": 9156,
        "RELAY_METRICS_PORT": 9161,
        "INVENTORY_GRPC_PORT": 7062,
        "INVENTORY_METRICS_PORT": 9162,
        "ORDER_PIPELINE_PORT": 7063,
        "ORDER_PIPELINE_METRICS_PORT": 9163,
        "NOTIFIER_PORT": 7064,
        "NOTIFIER_METRICS_PORT": 9164,
        "EXPORT_WORKER_PORT": 7065,
        "EXPORT_WORKER_METRICS_PORT": 9165,
        "ERP_PORT": 8101,
        "WAREHOUSE_PORT": 8102,
        "ROUTING_PORT": 8103,
        "PAYMENTS_PORT": 8104,
        "NOTIFY_PORT": 8105,
        "POSTGRES_PORT": 15432,
        "REDIS_PORT": 16379,
        "MONGO_PORT": 17017,
        "EDGE_PORT": 8080,
        "ENVOY_ADMIN_PORT": 9901,
    }
    assert [port for port in defaults.values() if port in EPHEMERAL] == []
    # Four event workers (and their metrics endpoints) still fit before the next port in use.
    extra = {7057, 7058, 7059, 9157, 9158, 9159}
    assert len(set(defaults.values()) | extra) == len(defaults) + len(extra)


def test_the_claimed_ports_are_todays_components() -> None:
    assert ports.claimed(LauncherConfig(run_dir=Path())) == [
        ("order service", "ORDER_GRPC_PORT", 7051),
        ("order service metrics", "ORDER_METRICS_PORT", 9151),
        ("product gateway", "PRODUCT_GRPC_PORT", 7052),
        ("product gateway metrics", "PRODUCT_METRICS_PORT", 9152),
        ("user service", "USER_GRPC_PORT", 7053),
        ("user service metrics", "USER_METRICS_PORT", 9153),
        ("rate-limit service", "RATELIMIT_GRPC_PORT", 7054),
        ("rate-limit service metrics", "RATELIMIT_METRICS_PORT", 9154),
        ("event gateway", "EVENT_GRPC_PORT", 7055),
        ("event gateway metrics", "EVENT_METRICS_PORT", 9155),
        ("event worker 1", "EVENT_WORKER_PORT", 7056),
        ("event worker 1 metrics", "EVENT_WORKER_METRICS_PORT", 9156),
        ("outbox relay", "RELAY_PORT", 7061),
        ("outbox relay metrics", "RELAY_METRICS_PORT", 9161),
        ("inventory service", "INVENTORY_GRPC_PORT", 7062),
        ("inventory service metrics", "INVENTORY_METRICS_PORT", 9162),
        ("order pipeline 1", "ORDER_PIPELINE_PORT", 7063),
        ("order pipeline 1 metrics", "ORDER_PIPELINE_METRICS_PORT", 9163),
        ("notifier 1", "NOTIFIER_PORT", 7064),
        ("notifier 1 metrics", "NOTIFIER_METRICS_PORT", 9164),
        ("export worker", "EXPORT_WORKER_PORT", 7065),
        ("export worker metrics", "EXPORT_WORKER_METRICS_PORT", 9165),
        ("ERP stub", "ERP_PORT", 8101),
        ("Warehouse stub", "WAREHOUSE_PORT", 8102),
        ("Routing stub", "ROUTING_PORT", 8103),
        ("Payment provider stub", "PAYMENTS_PORT", 8104),
        ("Notification stub", "NOTIFY_PORT", 8105),
        ("PostgreSQL", "POSTGRES_PORT", 15432),
        ("Redis", "REDIS_PORT", 16379),
        ("MongoDB-wire server", "MONGO_PORT", 17017),
        ("edge (Envoy)", "EDGE_PORT", 8080),
        ("Envoy admin", "ENVOY_ADMIN_PORT", 9901),
    ]


def test_event_workers_claim_consecutive_ports_and_given_servers_none() -> None:
    config = LauncherConfig.from_env(
        {"EVENT_WORKERS": "3", "EVENT_WORKER_PORT": "7156", "DATABASE_URL": "postgresql://x/db"}
    )
    claims = {(name, port) for name, _, port in ports.claimed(config)}
    assert {("event worker 1", 7156), ("event worker 2", 7157), ("event worker 3", 7158)} <= claims
    metrics = {("event worker 1 metrics", 9156), ("event worker 2 metrics", 9157)}
    assert metrics | {("event worker 3 metrics", 9158)} <= claims
    assert "PostgreSQL" not in {name for name, _ in claims}
    assert config.urls == {"DATABASE_URL": "postgresql://x/db"}


def test_names_and_settings_are_unique() -> None:
    names = [p.name for p in topology.PROCESSES]
    assert len(names) == len(set(names))
    settings = [p.setting for p in topology.ports(topology.PROCESSES)]
    assert len(settings) == len(set(settings))
    binds = [p.bind_setting for p in topology.PROCESSES if p.bind_setting]
    assert len(binds) == len(set(binds))


def test_every_server_and_worker_is_a_module_with_a_bind_setting() -> None:
    for process in topology.of_kind(Kind.SERVER, Kind.WORKER):
        assert importlib.util.find_spec(process.module) is not None, process.module
        assert process.bind_setting.endswith("_GRPC_BIND"), process.name
        assert process.metrics_port is not None, f"{process.name} serves no metrics"
        assert process.metrics_bind_setting.endswith("_METRICS_BIND"), process.name
    for process in topology.of_kind(Kind.SERVER):
        assert process.health, f"{process.name} has no health service"
    for _, exposed in topology.exposed():
        assert importlib.util.find_spec(exposed.module) is not None, exposed.module


def test_every_need_is_made_by_a_process_the_launcher_or_the_dev_hook(tmp_path: Path) -> None:
    provided = (
        set(topology.url_settings())
        | set(topology.target_settings())
        | set(topology.LAUNCHER_SETTINGS)
    )
    for process in topology.PROCESSES:
        made = set(dev_env_hook(process.dev_env)(tmp_path, {})) if process.dev_env else set()
        assert set(process.needs) <= provided | made, process.name


CONFIGS = {
    "order": OrderConfig.from_env,
    "product": ProductConfig.from_env,
    "user": UserConfig.from_env,
    "ratelimit": RateLimitConfig.from_env,
    "event": EventConfig.from_env,
    "event-worker": WorkerProcessConfig.from_env,
    "relay": RelayProcessConfig.from_env,
    "inventory": InventoryConfig.from_env,
    "order-pipeline": PipelineConfig.from_env,
    "notifier": NotifierConfig.from_env,
    "export-worker": ExportWorkerConfig.from_env,
}
SAMPLES = {
    "DATABASE_URL": "postgresql://shop:pw@db:5432/shop",
    "REDIS_URL": "redis://:pw@redis:6379/0",
    "MONGO_URL": "mongodb://mongo:27017/shop",
    "CURSOR_SECRET": "cursor",
    "ERP_URL": "http://erp:8101",
    "WAREHOUSE_URL": "http://warehouse:8102",
    "ROUTING_URL": "http://routing:8103",
    "PAYMENTS_URL": "http://payments:8104",
    "NOTIFY_URL": "http://notifications:8105",
    "INVENTORY_GRPC_TARGET": "inventory:7062",
    "WEBHOOK_SOURCES": json.dumps(
        {
            "courier": {
                "tenant": "demo",
                "secrets": ["whsec_" + base64.b64encode(b"k" * 32).decode()],
            }
        }
    ),
    "JWT_SIGNING_KEYS": "/keys/jwt-signing.pem",
    "PRODUCT_GRPC_TARGET": "product:7052",
    "USER_GRPC_TARGET": "user:7053",
    "JWT_ISSUER": "shop-platform",
    "JWT_AUDIENCE": "shop-api",
}


def test_every_server_and_worker_has_a_config_read_here() -> None:
    assert set(CONFIGS) == {p.name for p in topology.of_kind(Kind.SERVER, Kind.WORKER)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_needs_are_what_the_config_requires(name: str) -> None:
    process = topology.by_name(name)
    given = {need: SAMPLES[need] for need in process.needs}
    CONFIGS[name](given)  # enough to start
    for need in process.needs:
        try:
            CONFIGS[name]({k: v for k, v in given.items() if k != need})
        except ConfigError:
            continue
        # Optional in the config: a need only because the launcher must pass it on.
        assert need in topology.LAUNCHER_SETTINGS, f"{name} does not require {need}"


def test_each_process_starts_after_what_it_needs_and_the_edge_last() -> None:
    order = [p.name for p in topology.start_order()]
    providers = {p.provides: p.name for p in topology.PROCESSES if p.provides}
    for process in topology.PROCESSES:
        for need in process.needs:
            if need in providers:
                assert order.index(providers[need]) < order.index(process.name), need
    assert order[-1] == "envoy"
    assert sorted(order) == sorted(p.name for p in topology.PROCESSES)


def test_the_topology_imports_no_service() -> None:
    text = (ROOT / "services" / "topology.py").read_text()
    assert "import services." not in text
    assert "from services." not in text


# --- the services' own dev settings ----------------------------------------------------------


def test_the_user_service_keeps_the_signing_key_of_an_existing_run_dir(tmp_path: Path) -> None:
    hook = dev_env_hook("services.user.dev:dev_env")
    first = hook(tmp_path, {})
    key = Path(first["JWT_SIGNING_KEYS"])
    assert key == tmp_path / "keys" / "jwt-signing.pem"
    pem = key.read_bytes()
    assert hook(tmp_path, {}) == first
    assert key.read_bytes() == pem


def test_the_event_gateway_keeps_the_stored_webhook_secret(tmp_path: Path) -> None:
    stored = {"postgres_password": "p", event_dev.SECRET_NAME: "whsec_" + "a" * 44}
    (tmp_path / dev.SECRETS_FILE).write_text(json.dumps(stored))
    made = dev_env_hook("services.event.dev:dev_env")(tmp_path, {})
    sources = json.loads(made["WEBHOOK_SOURCES"])
    assert sources == {
        event_dev.COURIER: {"tenant": dev.DEMO_TENANT, "secrets": [stored["webhook_secret"]]}
    }
    assert json.loads((tmp_path / dev.SECRETS_FILE).read_text()) == stored
    # The banner names the courier the hook makes.
    assert f"source '{event_dev.COURIER}'" in topology.by_name("event").note


def test_given_webhook_sources_win_and_no_secret_is_made(tmp_path: Path) -> None:
    given = '{"c": {"tenant": "t", "secrets": ["whsec_x"]}}'
    made = dev_env_hook("services.event.dev:dev_env")(tmp_path, {"WEBHOOK_SOURCES": given})
    assert made == {"WEBHOOK_SOURCES": given}
    assert not (tmp_path / dev.SECRETS_FILE).exists()


def test_a_run_dir_keeps_its_secrets_and_gains_new_ones(tmp_path: Path) -> None:
    (tmp_path / dev.SECRETS_FILE).write_text(json.dumps({"cursor_secret": "kept"}))
    values = dev.stored_secrets(tmp_path, {"cursor_secret": lambda: "new", "other": lambda: "o"})
    assert values == {"cursor_secret": "kept", "other": "o"}
    assert (tmp_path / dev.SECRETS_FILE).stat().st_mode & 0o777 == 0o600


# --- a new entry reaches every derived place ---------------------------------------------------


@pytest.mark.usefixtures("extended")
def test_a_new_entry_reaches_the_launcher_config_and_the_claimed_ports() -> None:
    defaults = LauncherConfig(run_dir=Path())
    assert defaults.port("LOYALTY_GRPC_PORT") == 7063
    config = LauncherConfig.from_env({"LOYALTY_GRPC_PORT": "7163", "DIGEST_WORKERS": "3"})
    assert config.port("LOYALTY_GRPC_PORT") == 7163
    assert config.replica_count(DIGEST) == 3
    claims = ports.claimed(config)
    assert ("loyalty service", "LOYALTY_GRPC_PORT", 7163) in claims
    assert [c for c in claims if c[1] == "DIGEST_PORT"] == [
        ("digest worker 1", "DIGEST_PORT", 7071),
        ("digest worker 2", "DIGEST_PORT", 7072),
        ("digest worker 3", "DIGEST_PORT", 7073),
    ]
    assert LauncherConfig(run_dir=Path()).replica_count(DIGEST) == 2


@pytest.mark.usefixtures("extended")
def test_a_new_entry_reaches_the_tests_free_ports() -> None:
    config = LauncherConfig.on_free_ports(Path(), {"DATABASE_URL": "postgresql://x/db"})
    assert config.port("LOYALTY_GRPC_PORT") == config.port("DIGEST_PORT") == 0
    assert ports.claimed(config) == []
    assert config.urls == {"DATABASE_URL": "postgresql://x/db"}


@pytest.mark.usefixtures("extended")
def test_a_new_entry_reaches_the_start_order() -> None:
    order = [p.name for p in topology.start_order()]
    assert order.index("postgres") < order.index("loyalty") < order.index("envoy")
    assert order.index("redis") < order.index("digest") < order.index("envoy")


@pytest.mark.usefixtures("extended")
def test_a_new_entry_reaches_the_edge_clusters_and_routes() -> None:
    assert topology.clusters()["loyalty"] == "shop.loyalty.v1.LoyaltyService"
    assert "digest" not in topology.clusters()
    upstreams = {name: edge_routes.Endpoint("h", 1) for name in topology.clusters()}
    cluster = next(c for c in edge_routes.clusters(upstreams) if c["name"] == "loyalty")
    check = cluster["health_checks"][0]["grpc_health_check"]
    assert check == {"service_name": "shop.loyalty.v1.LoyaltyService"}
    assert "transport_socket" not in cluster
    # With Envoy's service identity every cluster is mTLS, checking the process's name.
    envoy = ServiceTls(Path("ca.crt"), Path("tls.crt"), Path("tls.key"))
    for secured in edge_routes.clusters(upstreams, envoy):
        context = secured["transport_socket"]["typed_config"]
        assert context["sni"] == secured["name"]
        sans = context["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
        assert sans == [{"san_type": "DNS", "matcher": {"exact": secured["name"]}}]
    routes = {
        (json.dumps(r["match"], sort_keys=True), r["route"]["cluster"], r["route"]["timeout"])
        for r in edge_routes.routes(EdgeLimits())
    }
    assert ('{"path": "/shop.loyalty.v1.LoyaltyService/Redeem"}', "loyalty", "2s") in routes
    assert ('{"prefix": "/shop.loyalty.v1.LoyaltyService/"}', "loyalty", "7s") in routes
    paths = [r["match"] for r in edge_routes.routes(EdgeLimits())]
    # A method's own route comes before its service's prefix route.
    assert paths.index({"path": "/shop.loyalty.v1.LoyaltyService/Redeem"}) < paths.index(
        {"prefix": "/shop.loyalty.v1.LoyaltyService/"}
    )


@pytest.mark.usefixtures("extended")
def test_a_new_entry_reaches_the_compose_settings_and_the_drift_check() -> None:
    assert compose.settings().upstreams["loyalty"] == edge_routes.Endpoint("loyalty", 7063)
    expected = compose.expected_services()
    assert expected["loyalty"] == compose.ComposeService(
        "loyalty",
        ("python", "-m", "services.loyalty"),
        {
            "DATABASE_URL": None,
            "CURSOR_SECRET": None,
            "LOYALTY_GRPC_BIND": "0.0.0.0:7063",
            "LOYALTY_HEALTH_BIND": "0.0.0.0:7163",
            "SERVICE_TLS_CA": "/etc/shop-tls/loyalty/ca.crt",
            "SERVICE_TLS_CERT": "/etc/shop-tls/loyalty/tls.crt",
            "SERVICE_TLS_KEY": "/etc/shop-tls/loyalty/tls.key",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317",
        },
        health_port=7163,
        health_service="shop.loyalty.v1.LoyaltyService",
    )
    assert expected["digest"].command == ("python", "-m", "services.digest")
    spec: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert drift(spec, expected) == [
        "loyalty: no compose service",
        "digest: no compose service",
    ]


@pytest.mark.usefixtures("extended")
def test_a_new_entry_reaches_the_state_and_the_ready_banner(tmp_path: Path) -> None:
    state = State(
        rest_url="http://127.0.0.1:8080",
        targets={"loyalty": ["127.0.0.1:7063"], "digest": ["127.0.0.1:7071", "127.0.0.1:7072"]},
    )
    assert state.target("loyalty") == "127.0.0.1:7063"
    shown = dict(endpoints(state, tmp_path))
    assert shown["loyalty service"] == "127.0.0.1:7063 (points)"
    assert shown["digest workers"] == "127.0.0.1:7071, 127.0.0.1:7072 (health)"


def test_a_state_recorded_by_another_version_still_stops(tmp_path: Path) -> None:
    recorded = {"run_dir": "r", "order_grpc_target": "127.0.0.1:50051", "pids": {"order": 1}}
    state = State.from_json(json.dumps(recorded))
    assert (state.run_dir, state.pids) == ("r", {"order": 1})
    assert dataclasses.asdict(state)["targets"] == {}
