"""The Kubernetes manifests (deploy/k8s/), checked offline against the topology.

The files must be exactly what `tools.k8s` renders from
services/topology.py. Each overlay is built with `kubectl kustomize` (skipped
where kubectl is absent; the base's own documents are checked either way) and
every document passes `kubernetes-validate --strict` against the Kubernetes
version below. Then the rendered documents are held to what the platform needs:
every server and worker a Deployment with gRPC probes on its health port and
service, a Service where it serves, a PDB, limits and a non-root read-only pod;
config from ConfigMaps, credentials only by Secret reference; NetworkPolicies
that let only Envoy reach the services and only the services reach the databases.
"""

from __future__ import annotations

import base64
import copy
import json
import os
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
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services import topology
from services.kit.config import ServerConfig
from services.launcher import ROOT, certs, compose, infra, procs
from services.launcher.codegen import DESCRIPTOR_PATH
from services.launcher.edge import LUA
from services.launcher.edge_routes import Endpoint
from services.topology import Kind
from tests.edges import tracer_endpoint
from tools.k8s import common, edge, policies, render, workloads

# The oldest release the manifests target: gRPC probes, matchLabelKeys in topology
# spread constraints and the restricted Pod Security Standard are all on by default.
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("dev", "prod")
KUBECTL = shutil.which("kubectl")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY", re.IGNORECASE)
URL_PASSWORD = re.compile(r"://[^/:@\s]+:([^@\s]+)@")
APPS = common.apps()
EDGE = topology.of_kind(Kind.EDGE)[0]
Doc = dict[str, Any]


def kustomize_major(kubectl: str) -> int:
    """The major version of the kustomize built into kubectl (0 when it does not say)."""
    result = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Kustomize Version: v(\d+)", result.stdout)
    return int(found[1]) if found else 0


def kustomize(overlay: str) -> list[Doc]:
    if KUBECTL is None:
        pytest.skip("no kubectl on PATH: `kubectl kustomize` cannot build the overlays")
    if kustomize_major(KUBECTL) < 4:
        pytest.skip("kubectl's kustomize predates v4 (no `patches` or `replicas` fields)")
    result = subprocess.run(
        [KUBECTL, "kustomize", str(common.OUT / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def base_documents() -> list[Doc]:
    """The base's resources as written, without kustomize (no generated ConfigMaps)."""
    return [
        doc
        for name in render.base_files()
        for doc in yaml.safe_load_all((common.BASE / name).read_text())
        if doc
    ]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, kustomize(request.param)


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]  # type: ignore[no-any-return]


def strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


# --- the files are the topology's ------------------------------------------------------


def test_manifests_are_rendered_from_the_topology() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in render.render().items()
        if not path.is_file() or path.read_text() != text
    ]
    stale += [
        str(copied.relative_to(ROOT))
        for source, copied in render.copies()
        if not copied.is_file() or copied.read_bytes() != source.read_bytes()
    ]
    assert not stale, (
        f"{stale} differ from services/topology.py: run "
        "`PYTHONPATH=.:gen .venv/bin/python -m tools.k8s` and commit the result"
    )


def test_deploy_holds_no_file_the_renderer_does_not_own() -> None:
    owned = set(render.render()) | {copied for _, copied in render.copies()}
    found = {p for p in common.OUT.rglob("*") if p.is_file()}
    assert found - owned == set()


def test_a_need_without_a_source_stops_the_render() -> None:
    order = topology.by_name("order")
    unknown = type(order)(**{**order.__dict__, "needs": (*order.needs, "PAYMENT_URL")})
    with pytest.raises(ValueError, match="PAYMENT_URL"):
        workloads.app_env(unknown)


# --- schemas ---------------------------------------------------------------------------


def validate(docs: list[Doc]) -> list[str]:
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message}")
    return errors


def test_the_base_documents_validate_strictly() -> None:
    assert validate(base_documents()) == []


def test_every_overlay_validates_strictly(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    assert validate(docs) == []
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Job"} <= kinds


def test_strict_validation_refuses_an_unknown_field() -> None:
    deployment = copy.deepcopy(workloads.app_deployment(topology.by_name("order")))
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    assert len(validate([deployment])) == 1


# --- every process ---------------------------------------------------------------------


def process_problems(docs: list[Doc], env: str) -> list[str]:
    """How the documents fall short of what each server and worker needs."""
    deployments = of_kind(docs, "Deployment")
    services = of_kind(docs, "Service")
    budgets = of_kind(docs, "PodDisruptionBudget")
    found: list[str] = []
    for process in APPS:
        name, port = process.name, process.port.default
        deploy = deployments.get(name)
        if deploy is None:
            found.append(f"{name}: no Deployment")
            continue
        spec = deploy["spec"]
        pod = spec["template"]["spec"]
        box = container(deploy)
        if spec["selector"]["matchLabels"] != common.selector(name):
            found.append(f"{name}: selects {spec['selector']['matchLabels']}")
        if env == "prod" and spec["replicas"] < 2:
            found.append(f"{name}: {spec['replicas']} replica in prod")
        if box["command"] != ["python", "-m", process.module]:
            found.append(f"{name}: runs {box['command']}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc_probe = box.get(probe, {}).get("grpc")
            want = {
                "port": process.probe_port,
                **({"service": process.health} if process.health else {}),
            }
            if grpc_probe != want:
                found.append(f"{name}: {probe} is {grpc_probe}, not {want}")
        binds = {e["name"]: e.get("value") for e in box["env"]}
        if binds.get(process.bind_setting) != f"0.0.0.0:{port}":
            found.append(f"{name}: {process.bind_setting} is {binds.get(process.bind_setting)}")
        if "preStop" not in box.get("lifecycle", {}):
            found.append(f"{name}: no preStop drain")
        if pod.get("terminationGracePeriodSeconds", 30) <= common.PRE_STOP_S + 5:
            found.append(f"{name}: the grace period leaves no time to drain")
        limits = box.get("resources", {}).get("limits", {})
        requests = box.get("resources", {}).get("requests", {})
        if {"cpu", "memory"} - set(limits) or {"cpu", "memory"} - set(requests):
            found.append(f"{name}: resources {box.get('resources')}")
        found += security_problems(name, pod, box)
        if not pod.get("topologySpreadConstraints"):
            found.append(f"{name}: no topology spread")
        if process.kind is Kind.SERVER:
            service = services.get(name)
            ports = [
                (p["port"], p["targetPort"])
                for p in (service or {}).get("spec", {}).get("ports", [])
            ]
            if service is None or ports != [(port, "grpc")]:
                found.append(f"{name}: Service ports {ports}, not [({port}, 'grpc')]")
            elif service["spec"]["selector"] != common.selector(name):
                found.append(f"{name}: the Service selects {service['spec']['selector']}")
        budget = budgets.get(name)
        if budget is None or budget["spec"]["selector"]["matchLabels"] != common.selector(name):
            found.append(f"{name}: no PodDisruptionBudget")
    return found


def security_problems(name: str, pod: Doc, box: Doc) -> list[str]:
    found = []
    context = pod.get("securityContext", {})
    if context.get("runAsNonRoot") is not True or context.get("runAsUser", 0) == 0:
        found.append(f"{name}: the pod may run as root")
    own = box.get("securityContext", {})
    if own.get("readOnlyRootFilesystem") is not True:
        found.append(f"{name}: the root filesystem is writable")
    if own.get("allowPrivilegeEscalation") is not False:
        found.append(f"{name}: privilege escalation allowed")
    if own.get("capabilities", {}).get("drop") != ["ALL"]:
        found.append(f"{name}: capabilities kept")
    tmp = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    if not any(m["mountPath"] == "/tmp" and m["name"] in tmp for m in box.get("volumeMounts", [])):
        found.append(f"{name}: no writable /tmp")
    return found


def test_every_process_of_the_base(rendered: tuple[str, list[Doc]]) -> None:
    env, docs = rendered
    assert process_problems(docs, env) == []


def test_every_process_without_kubectl() -> None:
    assert process_problems(base_documents(), "base") == []


def test_the_process_check_sees_a_wrong_probe_and_a_root_pod() -> None:
    docs = [copy.deepcopy(d) for d in base_documents()]
    order = of_kind(docs, "Deployment")["order"]
    container(order)["readinessProbe"]["grpc"]["port"] = 1
    order["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    docs.remove(of_kind(docs, "PodDisruptionBudget")["relay"])
    assert process_problems(docs, "base") == [
        "order: readinessProbe is {'port': 1, 'service': 'shop.order.v1.OrderService'}, "
        "not {'port': 7151, 'service': 'shop.order.v1.OrderService'}",
        "order: the pod may run as root",
        "relay: no PodDisruptionBudget",
    ]


def test_consumer_groups_scale_on_cpu(rendered: tuple[str, list[Doc]]) -> None:
    env, docs = rendered
    autoscalers = of_kind(docs, "HorizontalPodAutoscaler")
    consumers = {p.name for p in APPS if p.replicas is not None}
    assert set(autoscalers) == consumers
    for name, hpa in autoscalers.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert hpa["spec"]["minReplicas"] >= (3 if env == "prod" else 1)
    # Each consumer of the group has its own name: its pod's.
    for name in consumers:
        box = container(of_kind(docs, "Deployment")[name])
        setting = topology.by_name(name).replicas
        assert setting is not None
        names = {e["name"]: e.get("valueFrom") for e in box["env"]}
        assert names[setting.name_setting] == {"fieldRef": {"fieldPath": "metadata.name"}}


# --- settings and secrets ---------------------------------------------------------------


def settings_of(docs: list[Doc], box: Doc) -> dict[str, str]:
    maps = of_kind(docs, "ConfigMap")
    found: dict[str, str] = {}
    for source in box.get("envFrom", []):
        found.update(maps[source["configMapRef"]["name"]]["data"])
    return found


def test_every_need_comes_from_the_settings_or_the_secret(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    deployments = of_kind(docs, "Deployment")
    for process in APPS:
        box = container(deployments[process.name])
        settings = settings_of(docs, box)
        env = {e["name"]: e for e in box["env"]}
        for need in process.needs:
            if need in common.SECRET_SETTINGS:
                assert env[need]["valueFrom"]["secretKeyRef"] == {
                    "name": common.SECRET,
                    "key": need,
                }
            else:
                assert need in settings, f"{process.name} gets no {need}"
    user = deployments["user"]
    keys = settings_of(docs, container(user))["JWT_SIGNING_KEYS"].split(",")
    mounts = {m["mountPath"]: m["name"] for m in container(user)["volumeMounts"]}
    volumes = {v["name"]: v for v in user["spec"]["template"]["spec"]["volumes"]}
    for key in keys:
        volume = volumes[mounts[str(Path(key).parent)]]
        assert volume["secret"]["secretName"] == common.JWT_SECRET


def secret_values(docs: list[Doc]) -> list[str]:
    """Every place a document holds a credential instead of naming a Secret."""
    found = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Secret":
            found.append(f"{where}: a Secret in the manifests")
        if doc["kind"] == "ConfigMap":
            found += [f"{where}: {k}" for k in doc.get("data", {}) if SECRET_NAME.search(k)]
        for text in strings(doc):
            if URL_PASSWORD.search(text):
                found.append(f"{where}: a password in {text!r}")
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for box in spec.get("containers", []):
            for env in box.get("env", []):
                if "value" in env and (
                    SECRET_NAME.search(env["name"]) or env["name"] in common.SECRET_SETTINGS
                ):
                    found.append(f"{where}: {env['name']} has a value")
    return found


def test_no_manifest_holds_a_secret(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    assert secret_values(docs) == []


def test_the_secret_check_sees_a_literal() -> None:
    docs = [copy.deepcopy(d) for d in base_documents()]
    box = container(of_kind(docs, "Deployment")["relay"])
    box["env"].append({"name": "CURSOR_SECRET", "value": "s3cret"})
    box["env"].append({"name": "MY_URL", "value": "redis://shop:pw@redis:6379/0"})
    assert secret_values(docs) == [
        "Deployment/relay: a password in 'redis://shop:pw@redis:6379/0'",
        "Deployment/relay: CURSOR_SECRET has a value",
    ]


def test_the_databases_are_external_services(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    services = of_kind(docs, "Service")
    for name in common.DATABASE_PORTS:
        assert services[name]["spec"]["type"] == "ExternalName"
    assert not of_kind(docs, "StatefulSet")


def test_envoy_and_every_process_trace_to_the_external_collector(
    rendered: tuple[str, list[Doc]],
) -> None:
    env, docs = rendered
    # The collector is run outside the platform (an operator's, a vendor's), like the
    # databases: a name for it, no workload.
    collector = of_kind(docs, "Service")[compose.COLLECTOR.host]
    assert collector["spec"]["type"] == "ExternalName"
    assert collector["spec"]["externalName"].startswith(f"{compose.COLLECTOR.host}.")
    assert compose.COLLECTOR.host not in of_kind(docs, "Deployment")
    [port] = collector["spec"]["ports"]
    # Envoy's config, from its ConfigMap, starts each trace and sends it to that Service.
    deployments = of_kind(docs, "Deployment")
    volumes = deployments[EDGE.name]["spec"]["template"]["spec"]["volumes"]
    config_map = next(v["configMap"]["name"] for v in volumes if v["name"] == "config")
    envoy_config = yaml.safe_load(of_kind(docs, "ConfigMap")[config_map]["data"]["envoy.yaml"])
    assert tracer_endpoint(envoy_config) == Endpoint(collector["metadata"]["name"], port["port"])
    # Every server and worker exports to it, by its settings.
    for process in APPS:
        box = container(deployments[process.name])
        values = {e["name"]: e["value"] for e in box["env"] if "value" in e}
        config = ServerConfig.from_env(
            process.bind_setting.removesuffix("_GRPC_BIND"), settings_of(docs, box) | values
        )
        assert config.otlp_endpoint == f"http://{compose.COLLECTOR.host}:{port['port']}", (
            env,
            process.name,
        )


# --- Envoy and the migration Job -------------------------------------------------------


def test_envoy_loads_the_compose_config_from_its_configmap(rendered: tuple[str, list[Doc]]) -> None:
    env, docs = rendered
    deploy = of_kind(docs, "Deployment")[EDGE.name]
    box = container(deploy)
    command = box["command"]
    config_path = command[command.index("-c") + 1]
    mount = next(m for m in box["volumeMounts"] if m["name"] == "config")["mountPath"]
    settings = compose.settings()
    assert {config_path, settings.lua_path, settings.descriptor_path} == {
        f"{mount}/envoy.yaml",
        f"{mount}/edge.lua",
        f"{mount}/descriptor.binpb",
    }
    volume = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    config = of_kind(docs, "ConfigMap")[volume["configMap"]["name"]]
    assert config["data"]["envoy.yaml"] == compose.OUTPUT.read_text()
    assert config["data"]["edge.lua"] == LUA.read_text()
    assert base64.b64decode(config["binaryData"]["descriptor.binpb"]) == (
        DESCRIPTOR_PATH.read_bytes()
    )
    assert security_problems(EDGE.name, deploy["spec"]["template"]["spec"], box) == []
    service = of_kind(docs, "Service")[EDGE.name]
    assert service["spec"]["ports"][0]["port"] == settings.edge_port
    if env == "prod":
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["spec"]["externalTrafficPolicy"] == "Local"
        assert deploy["spec"]["replicas"] >= 2
    assert EDGE.name in of_kind(docs, "PodDisruptionBudget")


def test_envoy_dials_every_cluster_by_its_service_name(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    services = of_kind(docs, "Service")
    text = compose.OUTPUT.read_text()
    for name in topology.clusters():
        port = topology.by_name(name).port.default
        assert f'"socket_address": {{"address": "{name}", "port_value": {port}}}' in text
        # Headless: Envoy's STRICT_DNS cluster resolves every ready pod.
        assert services[name]["spec"]["clusterIP"] == "None"


def identity_mount(deploy: Doc) -> tuple[Doc, Doc] | None:
    """The volume and mount of a pod's service identity Secret, if it has one."""
    pod = deploy["spec"]["template"]["spec"]
    for volume in pod.get("volumes", []):
        if "secret" in volume and volume["secret"]["secretName"].endswith("-tls"):
            mount = next(
                (m for m in container(deploy)["volumeMounts"] if m["name"] == volume["name"]), None
            )
            return (volume, mount) if mount is not None else None
    return None


def test_every_pod_mounts_its_own_identity_secret(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    deployments = of_kind(docs, "Deployment")
    for process in [*APPS, EDGE]:
        deploy = deployments[process.name]
        found = identity_mount(deploy)
        assert found is not None, f"{process.name} mounts no identity Secret"
        volume, mount = found
        # A reference only: cert-manager (or `kubectl create secret`) supplies the Secret.
        assert volume["secret"]["secretName"] == f"{process.name}-tls"
        assert mount["readOnly"] is True
        own = certs.files(compose.TLS_ROOT, process.name)
        assert mount["mountPath"] == str(own.ca.parent)
        if process.kind is Kind.EDGE:
            continue
        env = {e["name"]: e.get("value") for e in container(deploy)["env"]}
        assert {k: env.get(k) for k in own.env()} == own.env(), process.name
        assert env[process.health_bind_setting] == f"0.0.0.0:{process.probe_port}"
    assert "-tls" not in json.dumps(of_kind(docs, "Secret"))


def test_every_envoy_cluster_to_a_service_has_a_tls_transport_socket() -> None:
    config = yaml.safe_load((common.BASE / "envoy" / "compose.yaml").read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    own = certs.files(compose.TLS_ROOT, certs.EDGE)
    for name in topology.clusters():
        socket = clusters[name].get("transport_socket", {})
        assert socket.get("name") == "envoy.transport_sockets.tls", name
        common_tls = socket["typed_config"]["common_tls_context"]
        assert common_tls["tls_certificates"][0]["private_key"] == {"filename": str(own.key)}
        assert common_tls["validation_context"]["trusted_ca"] == {"filename": str(own.ca)}


def test_the_identity_check_sees_a_pod_without_its_secret() -> None:
    docs = [copy.deepcopy(d) for d in base_documents()]
    order = of_kind(docs, "Deployment")["order"]
    pod = order["spec"]["template"]["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if "secret" not in v]
    assert identity_mount(order) is None


def test_envoy_readiness_is_the_compose_healthcheck() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert spec["services"]["envoy"]["healthcheck"]["test"][1:] == edge.envoy_ready()


def test_envoy_pre_stop_drains_and_fails_readiness(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    admin = procs.free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        compose.render_compose_edge(
            compose.settings_here(edge_port=procs.free_port(), admin_port=admin)
        )
    )
    deploy = edge.envoy_documents()[0]
    box = container(deploy)
    port = f"/{compose.settings().admin_port}"

    def local(command: list[str]) -> list[str]:
        return [*command[:-1], command[-1].replace(port, f"/{admin}").replace("sleep ", "true ")]

    ready = local(box["readinessProbe"]["exec"]["command"])
    drain = local(box["lifecycle"]["preStop"]["exec"]["command"])
    with (tmp_path / "envoy.log").open("w") as log:
        envoy = subprocess.Popen(
            [infra.executable("envoy"), "-c", str(config), *box["command"][3:]],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while subprocess.run(ready, capture_output=True, timeout=10).returncode != 0:
                assert envoy.poll() is None, (tmp_path / "envoy.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "envoy never became ready"
                time.sleep(0.2)
            assert subprocess.run(drain, capture_output=True, timeout=10).returncode == 0
            assert subprocess.run(ready, capture_output=True, timeout=10).returncode != 0
        finally:
            envoy.terminate()
            envoy.wait(timeout=15)


def test_the_migration_job_runs_what_compose_runs(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    job = of_kind(docs, "Job")["migrate"]
    box = job["spec"]["template"]["spec"]["containers"][0]
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert box["command"] == spec["services"]["migrate"]["command"]
    assert box["image"] == container(of_kind(docs, "Deployment")["order"])["image"]
    assert box["env"] == [common.secret_env("DATABASE_URL")]
    assert security_problems("migrate", job["spec"]["template"]["spec"], box) == []


# --- NetworkPolicies -------------------------------------------------------------------


def selects(policy: Doc, pod_labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(pod_labels.get(k) == v for k, v in wanted.items())


def pod_labels(docs: list[Doc]) -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }


def rules(docs: list[Doc], pod: dict[str, str], direction: str) -> list[Doc]:
    policy_type = direction.capitalize()
    return [
        rule
        for p in of_kind(docs, "NetworkPolicy").values()
        if policy_type in p["spec"]["policyTypes"] and selects(p, pod)
        for rule in p["spec"].get(direction, [])
    ]


def rule_ports(rule: Doc) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def test_every_pod_is_denied_by_default(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    deny = of_kind(docs, "NetworkPolicy")["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def ingress_problems(docs: list[Doc]) -> list[str]:
    """Who else than Envoy may connect to a service (beside Prometheus on the metrics
    port only, and the platform processes that name the server's target setting in
    their needs), and what else Envoy takes."""
    labels = pod_labels(docs)
    envoy = {"podSelector": {"matchLabels": common.selector(EDGE.name)}}
    scraper = {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": common.selector("prometheus")},
    }
    found = []
    for process in APPS:
        ingress = rules(docs, labels[process.name], "ingress")
        callers = [
            {"podSelector": {"matchLabels": common.selector(p.name)}}
            for p in APPS
            if process.target and process.target in p.needs
        ]
        allowed = [{"from": [envoy, *callers], "ports": policies.tcp(process.port.default)}]
        if not process.cluster:
            allowed = []
        if process.metrics_port is not None:
            allowed.append({"from": [scraper], "ports": policies.tcp(process.metrics_port.default)})
        if sorted(json.dumps(r, sort_keys=True) for r in ingress) != sorted(
            json.dumps(r, sort_keys=True) for r in allowed
        ):
            found.append(f"{process.name} takes {ingress}")
    edge_in = [rule_ports(r) for r in rules(docs, labels[EDGE.name], "ingress")]
    if edge_in != [{compose.settings().edge_port}]:
        found.append(f"envoy takes {edge_in}")
    return found


def test_only_envoy_reaches_the_services(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    assert ingress_problems(docs) == []


def test_only_the_services_reach_the_databases(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    labels = pod_labels(docs)
    for name, port in common.DATABASE_PORTS.items():
        setting = topology.by_name(name).provides
        reaching = {
            pod
            for pod, pod_label in labels.items()
            if any(port in rule_ports(r) for r in rules(docs, pod_label, "egress"))
        }
        needing = {p.name for p in APPS if setting in p.needs}
        if setting == "DATABASE_URL":
            needing.add("migrate")
        assert reaching == needing, name
    edge_out = rules(docs, labels[EDGE.name], "egress")
    dns, spans = {53}, {compose.COLLECTOR.port}
    assert {port for r in edge_out for port in rule_ports(r)} - dns - spans == {
        topology.by_name(n).port.default for n in topology.clusters()
    }


def collector_problems(docs: list[Doc]) -> list[str]:
    """Which pods cannot send spans to the collector's OTLP port, or may open more
    with the rule that lets them: Envoy and every server and worker send, nothing
    else does."""
    port = compose.COLLECTOR.port
    senders = {EDGE.name} | {p.name for p in APPS}
    found = []
    for pod, pod_label in pod_labels(docs).items():
        reaching = [r for r in rules(docs, pod_label, "egress") if port in rule_ports(r)]
        if pod not in senders:
            if reaching:
                found.append(f"{pod} reaches the collector")
        elif not reaching:
            found.append(f"{pod} cannot reach the collector")
        elif any(rule_ports(r) != {port} for r in reaching):
            found.append(f"{pod} opens more than port {port} with the collector's rule")
    return found


def test_envoy_and_every_process_reach_the_collector_and_no_more(
    rendered: tuple[str, list[Doc]],
) -> None:
    _, docs = rendered
    assert collector_problems(docs) == []


def test_the_collector_check_sees_a_missing_and_a_wide_egress() -> None:
    docs = [copy.deepcopy(d) for d in base_documents()]
    assert collector_problems(docs) == []
    port = compose.COLLECTOR.port
    policies_ = of_kind(docs, "NetworkPolicy")
    edge_egress = policies_["edge-egress"]["spec"]["egress"]
    edge_egress[:] = [r for r in edge_egress if port not in rule_ports(r)]
    relay = policies_["relay-egress"]["spec"]["egress"]
    next(r for r in relay if port in rule_ports(r))["ports"].append({"protocol": "TCP", "port": 22})
    migrate = policies_["migrate-egress"]["spec"]["egress"]
    migrate.append({"to": policies.anywhere(), "ports": policies.tcp(port)})
    assert sorted(collector_problems(docs)) == [
        "envoy cannot reach the collector",
        "migrate reaches the collector",
        f"relay opens more than port {port} with the collector's rule",
    ]


def test_every_pod_resolves_names(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    for name, labels in pod_labels(docs).items():
        assert any(53 in rule_ports(r) for r in rules(docs, labels, "egress")), name


def test_the_policy_check_sees_an_extra_ingress() -> None:
    docs = [copy.deepcopy(d) for d in base_documents()]
    assert ingress_problems(docs) == []
    wide = of_kind(docs, "NetworkPolicy")["order-ingress"]
    wide["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})
    assert len(ingress_problems(docs)) == 1
    assert ingress_problems(docs)[0].startswith("order takes")


# --- the image -------------------------------------------------------------------------


def dockerfile_healthcheck() -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK "))
    command = lines[start + 1].strip()
    assert command.startswith("CMD ["), command
    parsed = json.loads(command.removeprefix("CMD "))
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def test_the_image_healthcheck_reads_grpc_health() -> None:
    command = dockerfile_healthcheck()
    assert command[0] == "python"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port("127.0.0.1:0")
    server.start()
    env = {**os.environ, "HEALTH_PORT": str(bound), "HEALTH_SERVICE": "shop.order.v1.OrderService"}
    local = [sys.executable, *command[1:]]
    try:
        servicer.set("shop.order.v1.OrderService", health_pb2.HealthCheckResponse.SERVING)
        assert subprocess.run(local, env=env, capture_output=True, timeout=30).returncode == 0
        servicer.set("shop.order.v1.OrderService", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert subprocess.run(local, env=env, capture_output=True, timeout=30).returncode != 0
    finally:
        server.stop(None)
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert "ENV HEALTH_PORT=7051 \\" in lines
