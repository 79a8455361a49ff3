"""The stubs as tests use them: started on their own, and driven through their admin API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from services.launcher import procs
from services.launcher.stubs import start_stub


@contextmanager
def running_stub(
    name: str, run_dir: Path, *, port: int | None = None, faults: str | None = None
) -> Iterator[str]:
    """A stub process of the test's own (its URL), without faults unless `faults` (JSON) says."""
    env = {k: v for k, v in os.environ.items() if k != "STUB_FAULTS"}
    if faults is not None:
        env["STUB_FAULTS"] = faults
    proc, url = start_stub(name, run_dir, port or procs.free_port(), env)
    try:
        yield url
    finally:
        procs.stop(proc)


class StubAdmin:
    """Injects faults into one stub and reads what reached it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def faults(self, **config: Any) -> None:
        """Replace the stub's fault config (fields left out take their defaults)."""
        httpx.put(f"{self.url}/_admin/faults", json=config).raise_for_status()

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_admin/faults").raise_for_status()

    def reset_stats(self) -> None:
        httpx.delete(f"{self.url}/_admin/stats").raise_for_status()

    def requests(self, route: str) -> int:
        """How many requests reached a route, e.g. "GET /products/{id}"."""
        stats = httpx.get(f"{self.url}/_admin/stats").raise_for_status().json()
        return int(stats["by_route"].get(route, 0))

    def as_tenant(self, tenant: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A business request straight to the stub, e.g. to set stock."""
        return httpx.request(method, f"{self.url}{path}", headers={"X-Tenant-Id": tenant}, **kwargs)

    def routes(self, tenant: str, shipment: str) -> list[dict[str, Any]]:
        """The Routing stub's routes for one shipment of `tenant`, oldest first."""
        response = self.as_tenant(tenant, "GET", "/routes", params={"shipment_id": shipment})
        items: list[dict[str, Any]] = response.raise_for_status().json()["items"]
        return items
