"""The files under deploy/k8s/: the base's resources, the kustomizations and the copies
Envoy's ConfigMap is generated from."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from services import topology
from services.launcher import ROOT, compose
from services.launcher.codegen import DESCRIPTOR_PATH
from services.launcher.edge import LUA
from services.topology import Kind

from .common import (
    BASE,
    DATABASE_PORTS,
    ENVOY_CONFIG,
    HEADER,
    IMAGE,
    OUT,
    PART_OF,
    REGENERATE,
    SETTINGS,
    Doc,
    apps,
    settings,
)
from .edge import envoy_documents
from .policies import collector_service, external_services, network_policies
from .workloads import app_documents, migrate_job, stub_documents

ENVOY_FILES = {
    "envoy.yaml": compose.OUTPUT,
    "edge.lua": LUA,
    "descriptor.binpb": DESCRIPTOR_PATH,
}


def base_kustomization(resources_: list[str]) -> Doc:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources_,
        "configMapGenerator": [
            {"name": SETTINGS, "envs": ["settings.env"]},
            {
                "name": ENVOY_CONFIG,
                "files": [f"{key}=envoy/{source.name}" for key, source in ENVOY_FILES.items()],
            },
        ],
    }


def replicas(names: Iterable[str], count: int) -> list[Doc]:
    return [{"name": n, "count": count} for n in names]


def hpa_patch(minimum: int, maximum: int) -> Doc:
    return {
        "target": {"kind": "HorizontalPodAutoscaler"},
        "patch": yaml.safe_dump(
            [
                {"op": "replace", "path": "/spec/minReplicas", "value": minimum},
                {"op": "replace", "path": "/spec/maxReplicas", "value": maximum},
            ],
            sort_keys=False,
        ),
    }


def external_patch(domain: str, names: Iterable[str] = DATABASE_PORTS) -> list[Doc]:
    return [
        {
            "target": {"kind": "Service", "name": name},
            "patch": yaml.safe_dump(
                [{"op": "replace", "path": "/spec/externalName", "value": f"{name}.{domain}"}]
            ),
        }
        for name in names
    ]


def collector_patch(domain: str) -> list[Doc]:
    """Where an overlay's OpenTelemetry Collector answers."""
    return external_patch(domain, [compose.COLLECTOR.host])


def scaled() -> list[str]:
    return [*(p.name for p in apps()), topology.of_kind(Kind.EDGE)[0].name]


def dev_kustomization() -> Doc:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "shop-dev",
        "resources": ["namespace.yaml", "../../base", "stubs.yaml"],
        "images": [{"name": IMAGE, "newName": IMAGE, "newTag": "local"}],
        "replicas": replicas(scaled(), 1),
        "patches": [
            hpa_patch(1, 2),
            *external_patch("shop-data.svc.cluster.local"),
            *collector_patch("observability.svc.cluster.local"),
        ],
    }


def prod_kustomization() -> Doc:
    outside = {s.provides: f"https://{s.name}.example.com" for s in topology.of_kind(Kind.STUB)}
    lb = [
        {"op": "replace", "path": "/spec/type", "value": "LoadBalancer"},
        # The client's address reaches Envoy: per-address rate limits stay per client.
        {"op": "add", "path": "/spec/externalTrafficPolicy", "value": "Local"},
    ]
    edge = topology.of_kind(Kind.EDGE)[0].name
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "shop",
        "resources": ["namespace.yaml", "../../base"],
        "images": [{"name": IMAGE, "newName": "registry.example.com/shop/app", "newTag": "1.0.0"}],
        "replicas": replicas(scaled(), 3),
        "configMapGenerator": [
            {
                "name": SETTINGS,
                "behavior": "merge",
                "literals": [f"{k}={v}" for k, v in outside.items()],
            }
        ],
        "patches": [
            hpa_patch(3, 12),
            {
                "target": {"kind": "Service", "name": edge},
                "patch": yaml.safe_dump(lb, sort_keys=False),
            },
            *external_patch("db.example.internal"),
            *collector_patch("observability.example.internal"),
        ],
    }


def namespace(name: str) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/part-of": PART_OF,
                # Every pod of the platform meets the restricted Pod Security Standard.
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }


# --- files -----------------------------------------------------------------------------


def dump(docs: Iterable[Doc]) -> str:
    return HEADER + REGENERATE + str(yaml.safe_dump_all(list(docs), sort_keys=False, width=100))


def base_files() -> dict[str, list[Doc]]:
    files: dict[str, list[Doc]] = {f"{p.name}.yaml": app_documents(p) for p in apps()}
    files["envoy.yaml"] = envoy_documents()
    files["migrate.yaml"] = [migrate_job()]
    files["databases.yaml"] = external_services("databases.example.internal")
    files["otel-collector.yaml"] = [collector_service("observability.example.internal")]
    files["network-policies.yaml"] = network_policies()
    return files


def render() -> dict[Path, str]:
    """Every text file under deploy/k8s/ this module owns, by path."""
    base = base_files()
    out: dict[Path, str] = {BASE / name: dump(docs) for name, docs in base.items()}
    out[BASE / "kustomization.yaml"] = dump([base_kustomization(sorted(base))])
    out[BASE / "settings.env"] = (
        HEADER + REGENERATE + "".join(f"{k}={v}\n" for k, v in settings().items())
    )
    dev = OUT / "overlays" / "dev"
    stubs = [d for s in topology.of_kind(Kind.STUB) for d in stub_documents(s)]
    out[dev / "kustomization.yaml"] = dump([dev_kustomization()])
    out[dev / "namespace.yaml"] = dump([namespace("shop-dev")])
    out[dev / "stubs.yaml"] = dump(stubs)
    prod = OUT / "overlays" / "prod"
    out[prod / "kustomization.yaml"] = dump([prod_kustomization()])
    out[prod / "namespace.yaml"] = dump([namespace("shop")])
    return out


def copies() -> Iterator[tuple[Path, Path]]:
    """(source, copy beside the base): the files Envoy's ConfigMap is generated from."""
    for source in ENVOY_FILES.values():
        yield source, BASE / "envoy" / source.name


def main() -> None:
    for path, text in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    for source, copy in copies():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        print(f"copied {source.relative_to(ROOT)} to {copy.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
