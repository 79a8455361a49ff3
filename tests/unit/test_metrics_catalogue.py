"""The metrics catalogue (services/kit/metrics.py): every metric follows the naming
rules, carries no per-tenant or per-user label, and is listed in docs/observability.md
with its type and labels."""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from services.kit import metrics
from services.launcher import ROOT

DOC = (ROOT / "docs" / "observability.md").read_text()
# Labels whose values grow with the users: one series per tenant, user or message.
UNBOUNDED = re.compile(r"tenant|user|message|request|order_id|email|key", re.IGNORECASE)
NAMING = re.compile(r"^(grpc_(server|client)_[a-z_]+|shop_[a-z]+_[a-z_]+)$")


def _catalogue() -> dict[str, MetricWrapperBase]:
    return {
        name: metric
        for name, metric in vars(metrics).items()
        if isinstance(metric, MetricWrapperBase)
    }


def _exported_name(metric: MetricWrapperBase) -> str:
    name: str = metric._name
    return f"{name}_total" if metric._type == "counter" else name


def test_the_grpc_ecosystems_names_are_there() -> None:
    names = {_exported_name(m) for m in _catalogue().values()}
    assert {
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
    } <= names
    handled = metrics.GRPC_HANDLED._labelnames
    assert handled == ("grpc_service", "grpc_method", "grpc_type", "grpc_code")


def test_every_metric_is_named_by_the_rules_with_bounded_labels() -> None:
    for attribute, metric in _catalogue().items():
        name = _exported_name(metric)
        assert NAMING.match(name), name
        if metric._type == "counter":
            assert name.endswith("_total"), name
        if metric._type == "histogram":
            assert name.endswith("_seconds"), name
        assert not [label for label in metric._labelnames if UNBOUNDED.search(label)], attribute


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    rows = {
        match.group(1): match.group(0)
        for match in re.finditer(r"^\| `([a-z_]+)` \| .*$", DOC, re.MULTILINE)
    }
    for metric in _catalogue().values():
        name = _exported_name(metric)
        assert name in rows, f"docs/observability.md does not list {name}"
        row = rows[name]
        assert f"| {metric._type} |" in row, name
        for label in metric._labelnames:
            assert f"`{label}`" in row, (name, label)
