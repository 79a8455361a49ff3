"""Reading a process's Prometheus endpoint in tests: one scrape as a map of samples."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by its name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> Samples:
    """GET `url` (a `/metrics` endpoint) and parse it; fails on anything but 200 text."""
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return parse(response.text)


def value(samples: Samples, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    wanted = set((labels or {}).items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}
