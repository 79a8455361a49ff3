"""Headless Chromium driven over the DevTools protocol: open a page, read its live DOM.

`--dump-dom` snapshots a page once, at load or when virtual time runs out, which cannot
show a page that keeps changing while a stream is open; reading the DOM with
`Runtime.evaluate` can, as often as a test asks.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from services.launcher import procs


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One open tab, reached through its DevTools socket."""

    def __init__(self, socket_url: str) -> None:
        self._url = socket_url

    def evaluate(self, expression: str) -> Any:
        """The JSON value of `expression` in the page."""
        return asyncio.run(self._evaluate(expression))

    async def _evaluate(self, expression: str) -> Any:
        message = {
            "id": 1,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": True},
        }
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(self._url, max_msg_size=0) as ws,
        ):
            await ws.send_json(message)
            while True:
                reply = json.loads((await ws.receive(timeout=10)).data)
                if reply.get("id") == 1:
                    return reply["result"]["result"].get("value")


@contextmanager
def open_page(browser: str, url: str, profile: Path) -> Iterator[Page]:
    """Chromium headless on `url`, with its DevTools socket; stopped afterwards."""
    port = procs.free_port()
    proc = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", f"--remote-debugging-port={port}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        target = None
        while target is None:
            assert proc.poll() is None, "chromium exited"
            assert time.monotonic() < deadline, "chromium's DevTools never answered"
            try:
                pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                target = next((p for p in pages if p.get("type") == "page"), None)
            except httpx.HTTPError:
                pass
            if target is None:
                time.sleep(0.2)
        yield Page(target["webSocketDebuggerUrl"])
    finally:
        proc.kill()
        proc.wait()
