"""The NetworkPolicies and the ExternalName Services of the databases and the collector.

Ingress: only Envoy reaches a server, on its gRPC port. Egress: Envoy reaches only the
servers and the OpenTelemetry Collector's OTLP port; every server and worker only the
ports of what its topology `needs` and the collector's; the migration Job only
PostgreSQL's (the databases and the collector sit outside the namespace, where a policy
can name ports, not hosts).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services import topology
from services.launcher import compose
from services.topology import Kind

from .common import DATABASE_PORTS, HTTP_PORTS, PART_OF, Doc, apps, meta, selector


def external_service(name: str, host: str, port: int, component: str = "database") -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, component),
        "spec": {
            "type": "ExternalName",
            "externalName": host,
            "ports": [{"name": name, "port": port}],
        },
    }


def external_services(domain: str) -> list[Doc]:
    return [external_service(n, f"{n}.{domain}", p) for n, p in DATABASE_PORTS.items()]


def collector_service(domain: str) -> Doc:
    """The OpenTelemetry Collector (operator-run or a vendor's), by the name Envoy's
    tracer cluster and every process's OTEL_EXPORTER_OTLP_ENDPOINT dial."""
    name, port = compose.COLLECTOR.host, compose.COLLECTOR.port
    return external_service(name, f"{name}.{domain}", port, "observability")


def collector_egress() -> Doc:
    """Spans to the collector: its OTLP port, wherever its ExternalName points."""
    return {"to": anywhere(), "ports": tcp(compose.COLLECTOR.port)}


def policy(name: str, pods: dict[str, str], types: list[str], **rules: Any) -> Doc:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "spec": {
            "podSelector": {"matchLabels": pods} if pods else {},
            "policyTypes": types,
            **rules,
        },
    }


def tcp(*ports: int | str) -> list[Doc]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def anywhere() -> list[Doc]:
    """Any address outside the cluster and any pod in it (ipBlock alone may miss pods)."""
    return [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"namespaceSelector": {}}]


def egress_ports(needs: Iterable[str]) -> list[int]:
    """The ports a process's needs take it to: its databases and outside HTTP systems."""
    providers = {p.provides: p for p in topology.of_kind(Kind.INFRA, Kind.STUB)}
    ports: list[int] = []
    for need in needs:
        provider = providers.get(need)
        if provider is None:
            continue
        if provider.kind is Kind.INFRA:
            ports.append(DATABASE_PORTS[provider.name])
        else:
            ports.extend((*HTTP_PORTS, provider.port.default))
    return sorted(set(ports))


def network_policies() -> list[Doc]:
    edge = topology.of_kind(Kind.EDGE)[0]
    envoy = selector(edge.name)
    dns = [
        {
            "to": [
                {
                    "namespaceSelector": {},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
    ]
    docs = [
        policy("default-deny", {}, ["Ingress", "Egress"]),
        policy("allow-dns", {}, ["Egress"], egress=dns),
        policy(
            "edge-ingress",
            envoy,
            ["Ingress"],
            ingress=[{"ports": tcp(compose.settings().edge_port)}],
        ),
        policy(
            "edge-egress",
            envoy,
            ["Egress"],
            egress=[
                {
                    "to": [{"podSelector": {"matchLabels": selector(name)}}],
                    "ports": tcp(topology.by_name(name).port.default),
                }
                for name in topology.clusters()
            ]
            + [collector_egress()],
        ),
    ]
    for name in topology.clusters():
        process = topology.by_name(name)
        # Envoy, and the platform processes that call this server directly (by its
        # target setting: the order service and the pipeline calling inventory).
        callers = [envoy] + [
            selector(p.name) for p in apps() if process.target and process.target in p.needs
        ]
        docs.append(
            policy(
                f"{name}-ingress",
                selector(name),
                ["Ingress"],
                ingress=[
                    {
                        "from": [{"podSelector": {"matchLabels": c}} for c in callers],
                        "ports": tcp(process.port.default),
                    }
                ],
            )
        )
    # Prometheus (pods labelled app.kubernetes.io/name=prometheus, in any namespace)
    # may scrape each process's metrics port, and nothing else of it.
    scraper = {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": selector("prometheus")},
    }
    for process in apps():
        if process.metrics_port is not None:
            docs.append(
                policy(
                    f"{process.name}-metrics-ingress",
                    selector(process.name),
                    ["Ingress"],
                    ingress=[{"from": [scraper], "ports": tcp(process.metrics_port.default)}],
                )
            )
    # The servers and workers send spans; the migration Job does not.
    clients = [(p.name, p.needs, True) for p in apps()] + [("migrate", ("DATABASE_URL",), False)]
    servers = {p.target: p for p in apps() if p.target}
    for name, needs, traced in clients:
        ports = egress_ports(needs)
        rules: list[Doc] = [{"to": anywhere(), "ports": tcp(*ports)}] if ports else []
        if traced:
            rules.append(collector_egress())
        rules += [
            {
                "to": [{"podSelector": {"matchLabels": selector(servers[n].name)}}],
                "ports": tcp(servers[n].port.default),
            }
            for n in needs
            if n in servers
        ]
        if rules:
            docs.append(policy(f"{name}-egress", selector(name), ["Egress"], egress=rules))
    return docs
