"""The upstream HTTP client's hot path does no module search per request.

httpcore asks which event loop runs (`current_async_library`) several times per
request by importing sniffio; were sniffio missing, each ask would be a failed
import that walks sys.path (about 200 us of CPU per request on this machine).
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType

import httpcore._synchronization as synchronization


class _Recorder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        self.searched.append(fullname)
        return None


def test_asking_for_the_event_loop_searches_no_module() -> None:
    async def ask() -> list[str]:
        return [synchronization.current_async_library() for _ in range(3)]

    recorder = _Recorder()
    sys.meta_path.insert(0, recorder)
    try:
        answers = asyncio.run(ask())
    finally:
        sys.meta_path.remove(recorder)
    assert answers == ["asyncio"] * 3
    assert recorder.searched == []
