"""The dashboard and the alert rules name only series the running platform exports:
every name their queries select is declared on the `/metrics` page of a server or
worker of the session's platform, or on its Envoy's `/stats/prometheus` (Envoy
declares a histogram once it has recorded a value, so a request goes through first)."""

from __future__ import annotations

import httpx
import pytest

from services.launcher.platform import State
from tools.observability.queries import exposed, named_series

pytestmark = pytest.mark.e2e

# What Prometheus adds itself to every target.
SYNTHETIC = {"up"}


def test_every_series_of_the_dashboard_and_the_alerts_is_exported(platform: State) -> None:
    listed = httpx.get(
        f"{platform.rest_url}/v1/products", headers={"X-Tenant-Id": "demo"}, timeout=10
    )
    assert listed.status_code == 200, listed.text
    pages = [httpx.get(url, timeout=5) for urls in platform.metrics.values() for url in urls]
    pages.append(httpx.get(f"{platform.envoy_admin_url}/stats/prometheus", timeout=5))
    assert all(page.status_code == 200 for page in pages)
    found = set().union(*(exposed(page.text) for page in pages))
    named = named_series()
    assert any(name.startswith("envoy_") for name in named)
    assert named - found - SYNTHETIC == set()
