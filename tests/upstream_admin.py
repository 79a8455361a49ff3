"""The stubs' admin API (faults and request counts), as tests and benchmarks use it."""

from __future__ import annotations

from typing import Any

import httpx


class StubAdmin:
    """Injects faults into one stub and reads what reached it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def faults(self, **config: Any) -> None:
        """Replace the stub's fault config (fields left out take their defaults)."""
        httpx.put(f"{self.url}/_admin/faults", json=config).raise_for_status()

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_admin/faults").raise_for_status()

    def requests(self, route: str) -> int:
        """How many requests reached a route, e.g. "GET /products/{id}"."""
        stats = httpx.get(f"{self.url}/_admin/stats").raise_for_status().json()
        return int(stats["by_route"].get(route, 0))

    def as_tenant(self, tenant: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A business request straight to the stub, e.g. to set stock."""
        return httpx.request(method, f"{self.url}{path}", headers={"X-Tenant-Id": tenant}, **kwargs)
