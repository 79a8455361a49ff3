"""Every domain error maps to a gRPC status and, at the edge, to an HTTP status."""

from __future__ import annotations

import importlib
import pkgutil
import re

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

import services
from services.kit import error_model, errors, status
from services.launcher import ROOT

# Scripts that other programs run rather than import: a process's entry point and
# Alembic's env.py, which needs Alembic's context around it.
SCRIPTS = ("services.migrations.env",)


def _import_every_service_module() -> list[str]:
    """Import all of services/, so the walk below sees every PlatformError subclass
    wherever it is defined, not only those some test happened to import."""
    names = [
        info.name
        for info in pkgutil.walk_packages(services.__path__, "services.")
        if not info.name.endswith(".__main__") and info.name not in SCRIPTS
    ]
    for name in names:
        importlib.import_module(name)
    return names


SERVICE_MODULES = _import_every_service_module()


def _all_errors() -> list[type[errors.PlatformError]]:
    found: list[type[errors.PlatformError]] = []
    pending: list[type[errors.PlatformError]] = [errors.PlatformError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_the_walk_sees_kit_and_service_errors() -> None:
    found = {(cls.__module__, cls.__name__) for cls in _all_errors()}
    assert {(errors.__name__, "InvalidArgument"), (errors.__name__, "StaleVersion")} <= found
    # No test module imports these: the walk found them by importing services/.
    assert {
        ("services.order.domain", "OrderNotFound"),
        ("services.product.domain", "StaleProductVersion"),
        ("services.user.domain", "AlreadyRegistered"),
        ("services.event.signatures", "InvalidSignature"),
    } <= found
    assert "services.kit.interceptors" in SERVICE_MODULES
    assert not any(name.endswith("__main__") for name in SERVICE_MODULES)


@pytest.mark.parametrize("cls", _all_errors(), ids=lambda c: c.__name__)
def test_every_error_code_is_a_row_of_the_error_model(cls: type[errors.PlatformError]) -> None:
    assert cls.code in error_model.BY_CODE, f"{cls.__name__}.code {cls.code!r} is not in the table"


@pytest.mark.parametrize("cls", _all_errors(), ids=lambda c: c.__name__)
def test_every_error_class_is_mapped_explicitly_or_through_a_mapped_parent(
    cls: type[errors.PlatformError],
) -> None:
    # Kit classes are mapped by name. A service error inherits its mapping, so it must
    # derive from a specific kit class: straight from PlatformError it would be INTERNAL.
    if cls.__module__ == errors.__name__:
        assert cls in status.STATUS_BY_ERROR, f"{cls.__name__} has no gRPC status"
    else:
        assert cls.__mro__[1] is not errors.PlatformError, f"{cls.__name__} would map to INTERNAL"


def test_the_most_specific_mapping_wins() -> None:
    assert status.status_code_for(errors.Conflict("x")) is grpc.StatusCode.ABORTED
    assert (
        status.status_code_for(errors.IdempotencyKeyReused("x")) is grpc.StatusCode.ALREADY_EXISTS
    )
    assert (
        status.status_code_for(errors.InvalidTransition("x")) is grpc.StatusCode.FAILED_PRECONDITION
    )


def test_every_error_code_has_an_http_status_at_the_edge() -> None:
    lua = (ROOT / "envoy" / "edge.lua").read_text()
    table = lua[lua.index("CODE_TO_HTTP") : lua.index("}", lua.index("CODE_TO_HTTP"))]
    edge_codes = set(re.findall(r"(\w+) = \"\d{3}\"", table))
    missing = {cls.code for cls in _all_errors()} - edge_codes
    assert not missing, f"edge.lua has no HTTP status for {missing}"


def test_the_rich_status_carries_error_info_and_field_violations() -> None:
    rich = status.to_grpc_status(errors.InvalidArgument.field("items[0].sku", "must be set"))
    assert rich.code is grpc.StatusCode.INVALID_ARGUMENT
    assert rich.details == "items[0].sku: must be set"
    metadata = dict(rich.trailing_metadata)
    assert metadata[status.ERROR_CODE_KEY] == "invalid_argument"
    decoded = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert decoded.details[0].Unpack(info)
    assert decoded.details[1].Unpack(bad)
    assert (info.reason, info.domain) == ("invalid_argument", status.DOMAIN)
    assert bad.field_violations[0].field == "items[0].sku"
