"""Envoy's Deployment and Service: the compose config from a ConfigMap, admin-interface probes
and a preStop that fails readiness and drains."""

from __future__ import annotations

from services import topology
from services.launcher import certs, compose
from services.launcher.edge import LOG_FORMAT
from services.topology import Kind

from .common import (
    DRAIN_ADMIN,
    ENVOY_CONFIG,
    ENVOY_DRAIN_S,
    ENVOY_IMAGE,
    ENVOY_UID,
    Doc,
    container_security,
    meta,
    resources,
    selector,
    tmp_mount,
    tmp_volume,
)
from .workloads import deployment, pdb, tls_volume


def _admin(request: str) -> str:
    """A bash command sending one request to the admin interface (the image has no curl)."""
    admin = compose.settings().admin_port
    length = "Content-Length: 0\\r\\n" if request.startswith("POST") else ""
    headers = f"Host: localhost\\r\\n{length}"
    return (
        f"exec 3<>/dev/tcp/127.0.0.1/{admin} && printf '{request} HTTP/1.1\\r\\n"
        f"{headers}Connection: close\\r\\n\\r\\n' >&3"
    )


def envoy_ready() -> list[str]:
    """docker-compose.yml's Envoy healthcheck: the admin interface's /ready says LIVE."""
    return ["bash", "-c", _admin("GET /ready") + " && grep -q LIVE <&3"]


def envoy_documents() -> list[Doc]:
    edge = topology.of_kind(Kind.EDGE)[0]
    port = compose.settings().edge_port
    ready = {"exec": {"command": envoy_ready()}, "timeoutSeconds": 3}
    # Its client certificate for the services (the compose config names the files).
    identity, identity_mount = tls_volume(certs.EDGE)
    # Fail readiness (/ready answers DRAINING), close connections gracefully, wait.
    steps = [_admin(f"POST {p}") + " && cat <&3 >/dev/null" for p in DRAIN_ADMIN]
    drain = ["bash", "-c", "; ".join([*steps, f"sleep {ENVOY_DRAIN_S}"])]
    container: Doc = {
        "name": "envoy",
        "image": ENVOY_IMAGE,
        # The image's entrypoint only switches users; the pod already runs as envoy.
        "command": [
            "envoy",
            "-c",
            "/etc/shop/envoy.yaml",
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--log-format",
            LOG_FORMAT,
            "--drain-time-s",
            str(ENVOY_DRAIN_S),
        ],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "startupProbe": {**ready, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**ready, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {
            "tcpSocket": {"port": "http"},
            "timeoutSeconds": 3,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"exec": {"command": drain}}},
        # Above the overload manager's heap (EDGE_MAX_HEAP_MB, 512 MiB): it sheds first.
        "resources": resources("250m", "256Mi", "1", "768Mi"),
        "securityContext": container_security(),
        "volumeMounts": [
            tmp_mount(),
            {"name": "config", "mountPath": "/etc/shop", "readOnly": True},
            identity_mount,
        ],
    }
    volumes = [tmp_volume(), {"name": "config", "configMap": {"name": ENVOY_CONFIG}}, identity]
    deploy = deployment(edge, container, volumes, ENVOY_UID)
    deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = ENVOY_DRAIN_S + 20
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(edge.name, "edge"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(edge.name),
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }
    # Every ready Envoy by one DNS name: the local cluster that shares the per-address
    # and per-user quotas out among the replicas (services/launcher/edge_limits.py).
    replicas = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(compose.replicas_host(), "edge"),
        "spec": {
            "clusterIP": "None",
            "selector": selector(edge.name),
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }
    return [deploy, service, replicas, pdb(edge)]
