"""The import rules of docs/ARCHITECTURE.md: the kit stands alone, domains stay plain."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services.launcher import ROOT

SERVICES = ROOT / "services"
PACKAGES = sorted(
    p.name for p in SERVICES.iterdir() if (p / "__init__.py").exists() and p.name != "kit"
)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _top(module: str, depth: int = 2) -> str:
    return ".".join(module.split(".")[:depth])


def test_the_kit_imports_no_service() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (SERVICES / "kit").rglob("*.py")
        for module in _imports(path)
        if module.startswith("services.") and not module.startswith("services.kit")
    }
    assert offenders == set()


@pytest.mark.parametrize("package", [p for p in PACKAGES if p not in ("launcher", "migrations")])
def test_a_service_imports_only_the_kit_and_itself(package: str) -> None:
    allowed = {"services.kit", f"services.{package}"}
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (SERVICES / package).rglob("*.py")
        for module in _imports(path)
        if module.startswith("services.") and _top(module) not in allowed
    }
    assert offenders == set()


def test_domain_modules_import_neither_grpc_nor_sqlalchemy_nor_protobuf() -> None:
    # Contracts (generated messages under shop.*, protobuf itself) are mapped to
    # and from domain values outside the domain (e.g. services/order/events.py).
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in SERVICES.glob("*/domain.py")
        for module in _imports(path)
        if module.split(".")[0] in ("grpc", "sqlalchemy", "google", "shop")
    }
    assert offenders == set()


def test_use_cases_do_not_import_grpc() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in SERVICES.glob("*/usecases.py")
        for module in _imports(path)
        if module.split(".")[0] == "grpc"
    }
    assert offenders == set()


def test_the_launcher_imports_no_service_code() -> None:
    """It starts processes from the topology and loads a service's `dev_env` hook by
    name only when it starts that service (docs/ADDING.md)."""
    allowed = {"services.kit", "services.launcher", "services.topology"}
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (SERVICES / "launcher").rglob("*.py")
        for module in _imports(path)
        if module.startswith("services.") and _top(module) not in allowed
    }
    assert offenders == set()
