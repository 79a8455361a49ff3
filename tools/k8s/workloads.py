"""The servers' and workers' Deployments, Services, PDBs and HPAs, the migration Job, the
dev overlay's stubs."""

from __future__ import annotations

from services.launcher import compose
from services.topology import Kind, Process

from .common import (
    APP_UID,
    IMAGE,
    JWT_SECRET,
    PRE_STOP_S,
    SECRET_SETTINGS,
    SETTINGS,
    Doc,
    apps,
    check_needs,
    component,
    container_security,
    labels,
    meta,
    pod_security,
    resources,
    secret_env,
    selector,
    spread,
    tmp_mount,
    tmp_volume,
)
from .policies import policy, tcp


def grpc_probe(process: Process, **timing: int) -> Doc:
    """A kubelet gRPC probe: on the plaintext health-only port, since it cannot present
    the platform certificate the gRPC port asks for."""
    grpc: Doc = {"port": process.probe_port}
    if process.health:
        grpc["service"] = process.health
    return {"grpc": grpc, "timeoutSeconds": 3, **timing}


def probes(process: Process) -> Doc:
    return {
        "startupProbe": grpc_probe(process, periodSeconds=2, failureThreshold=30),
        "readinessProbe": grpc_probe(process, periodSeconds=5, failureThreshold=2),
        "livenessProbe": grpc_probe(process, periodSeconds=10, failureThreshold=3),
    }


def tls_secret(name: str) -> str:
    """The Secret holding one identity's `ca.crt`, `tls.crt`, `tls.key` (cert-manager's
    Certificate layout; docs/kubernetes.md)."""
    return f"{name}-tls"


def tls_volume(name: str) -> tuple[Doc, Doc]:
    """The pod's own identity Secret as a read-only volume and its mount, where
    SERVICE_TLS_* (and Envoy's config) look for it."""
    volume = {"name": "tls", "secret": {"secretName": tls_secret(name), "defaultMode": 0o440}}
    mount = {"name": "tls", "mountPath": str(compose.TLS_ROOT / name), "readOnly": True}
    return volume, mount


def app_env(process: Process) -> list[Doc]:
    check_needs(process)
    env: list[Doc] = [
        {"name": process.bind_setting, "value": f"0.0.0.0:{process.port.default}"},
        {"name": process.health_bind_setting, "value": f"0.0.0.0:{process.probe_port}"},
        *({"name": k, "value": v} for k, v in compose.tls_env(process.name).items()),
    ]
    if process.metrics_port is not None:
        env.append(
            {
                "name": process.metrics_bind_setting,
                "value": f"0.0.0.0:{process.metrics_port.default}",
            }
        )
    if process.replicas is not None:
        # Each consumer of the group is named after its pod.
        env.append(
            {
                "name": process.replicas.name_setting,
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            }
        )
    env.extend(secret_env(n) for n in process.needs if n in SECRET_SETTINGS)
    return env


def container_ports(process: Process) -> list[Doc]:
    """Its gRPC port, its health-only port, and the port its `/metrics` is scraped on."""
    found = [
        {"name": "grpc", "containerPort": process.port.default, "protocol": "TCP"},
        {"name": "health", "containerPort": process.probe_port, "protocol": "TCP"},
    ]
    if process.metrics_port is not None:
        found.append(
            {"name": "metrics", "containerPort": process.metrics_port.default, "protocol": "TCP"}
        )
    return found


def scrape_annotations(process: Process) -> dict[str, str]:
    """The `prometheus.io/*` annotations a Prometheus pod discovery reads."""
    if process.metrics_port is None:
        return {}
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(process.metrics_port.default),
        "prometheus.io/path": "/metrics",
    }


def uses_signing_keys(process: Process) -> bool:
    return "JWT_SIGNING_KEYS" in process.needs


def grace_s(process: Process) -> int:
    """preStop, the server's drain and its clean-up; a worker's in-flight handlers take longer."""
    return 40 if process.replicas is not None else 20


def app_deployment(process: Process) -> Doc:
    name = process.name
    identity, identity_mount = tls_volume(name)
    volumes = [tmp_volume(), identity]
    mounts = [tmp_mount(), identity_mount]
    if uses_signing_keys(process):
        volumes.append(
            {
                "name": "signing-keys",
                "secret": {"secretName": JWT_SECRET, "defaultMode": 0o440},
            }
        )
        mounts.append({"name": "signing-keys", "mountPath": "/keys", "readOnly": True})
    container: Doc = {
        "name": name,
        "image": IMAGE,
        "command": ["python", "-m", process.module],
        "ports": container_ports(process),
        "env": app_env(process),
        "envFrom": [{"configMapRef": {"name": SETTINGS}}],
        **probes(process),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "resources": resources("100m", "128Mi", "1", "512Mi"),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    return deployment(process, container, volumes, APP_UID)


def deployment(process: Process, container: Doc, volumes: list[Doc], uid: int) -> Doc:
    name = process.name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, component(process)),
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels(name, component(process)),
                    **(
                        {"annotations": scrape_annotations(process)}
                        if scrape_annotations(process)
                        else {}
                    ),
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": grace_s(process),
                    "securityContext": pod_security(uid),
                    "topologySpreadConstraints": spread(name),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def headless_service(process: Process) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(process.name, component(process)),
        "spec": {
            "clusterIP": "None",
            "selector": selector(process.name),
            "ports": [
                {
                    "name": "grpc",
                    "port": process.port.default,
                    "targetPort": "grpc",
                    "appProtocol": "kubernetes.io/h2c",
                }
            ],
        },
    }


def pdb(process: Process) -> Doc:
    # maxUnavailable, not minAvailable: a one-replica dev Deployment still drains.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(process.name, component(process)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(process.name)}},
    }


def hpa(process: Process) -> Doc:
    """CPU scaling for a consumer group (docs/kubernetes.md: queue-lag scaling with KEDA)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(process.name, component(process)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": process.name},
            "minReplicas": 2,
            "maxReplicas": 8,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def app_documents(process: Process) -> list[Doc]:
    docs = [app_deployment(process)]
    if process.kind is Kind.SERVER:
        docs.append(headless_service(process))
    docs.append(pdb(process))
    if process.replicas is not None:
        docs.append(hpa(process))
    return docs


def migrate_job() -> Doc:
    container: Doc = {
        "name": "migrate",
        "image": IMAGE,
        "command": [
            "python",
            "-m",
            "alembic",
            "-c",
            "services/migrations/alembic.ini",
            "upgrade",
            "head",
        ],
        "env": [secret_env("DATABASE_URL")],
        "resources": resources("100m", "128Mi", "500m", "256Mi"),
        "securityContext": container_security(),
        "volumeMounts": [tmp_mount()],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta("migrate", "migration"),
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": labels("migrate", "migration")},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(APP_UID),
                    "containers": [container],
                    "volumes": [tmp_volume()],
                },
            },
        },
    }


# --- the dev overlay's stubs -----------------------------------------------------------


def stub_documents(stub: Process) -> list[Doc]:
    port = stub.port.default
    probe = {"httpGet": {"path": "/_admin/health", "port": "http"}, "timeoutSeconds": 3}
    container: Doc = {
        "name": stub.name,
        "image": IMAGE,
        "command": ["python", "-m", "stubs", stub.name, "--host", "0.0.0.0", "--port", str(port)],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {**probe, "periodSeconds": 10},
        "resources": resources("50m", "64Mi", "500m", "256Mi"),
        "securityContext": container_security(),
        "volumeMounts": [tmp_mount()],
    }
    deploy = deployment(stub, container, [tmp_volume()], APP_UID)
    deploy["spec"]["replicas"] = 1
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(stub.name, "stub"),
        "spec": {
            "selector": selector(stub.name),
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }
    callers = [p.name for p in apps() if stub.provides in p.needs]
    ingress = policy(
        f"{stub.name}-ingress",
        selector(stub.name),
        ["Ingress"],
        ingress=[
            {
                "from": [{"podSelector": {"matchLabels": selector(c)}} for c in callers],
                "ports": tcp(port),
            }
        ],
    )
    return [deploy, service, ingress]
