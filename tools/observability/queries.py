"""The PromQL of the dashboard and the alert rules, and the series each query names:
what the tests hold to the series the processes and Envoy export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml  # type: ignore[import-untyped]

from .render import DASHBOARD, RULES

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip
# The suffixes each metric type puts on its samples.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana's variables
    found = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match[0].lower() in KEYWORDS:
            continue  # a function or an operator
        if match.start() and text[match.start() - 1].isdigit():
            continue  # a number's exponent (1e3) or a duration's unit (offset 5m)
        found.add(match[0])
    return found


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard."""
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def named_series() -> set[str]:
    """Every series name the dashboard's panels and the alert rules select."""
    exprs = [expr for _, expr in dashboard_queries()] + [r["expr"] for r in alert_rules()]
    return {name for expr in exprs for name in series_names(expr)}


def exposed(text: str) -> set[str]:
    """The series names a Prometheus text page declares (`# TYPE` lines, samples or not)."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        base = name.removesuffix("_total") if kind == "counter" else name
        names |= {name} | {base + suffix for suffix in SUFFIXES.get(kind, ())}
    return names
