"""The JSON log lines: written by a thread of their own, stamped with the caller's request context."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from services.kit import context, logs


class HeldStream(io.StringIO):
    """A stream whose writes wait until the test releases them (a slow disk or a full pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(timeout=5)
        return super().write(text)


@pytest.fixture
def stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldStream]:
    """The process's logs configured onto a held stream; the root logger restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = HeldStream()
    monkeypatch.setattr("sys.stdout", stream)
    # configure turns off logging's caller, thread and process lookups process-wide.
    for switch in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, switch, getattr(logging, switch))
    logs.configure("svc", "INFO")
    try:
        yield stream
    finally:
        stream.release.set()
        logs._flush()
        root.handlers[:] = handlers
        root.setLevel(level)


def _lines(stream: HeldStream) -> list[dict[str, Any]]:
    stream.release.set()
    logs._flush()  # the writer thread drains the queue before it stops
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_carries_the_callers_request_context_and_its_message_as_it_was(
    stdout: HeldStream,
) -> None:
    variables = (context.request_id, context.tenant_id, context.user_id, context.method)
    values = ("req-7", "t1", "u-1", "/shop.x.v1.X/Get")
    tokens = [var.set(value) for var, value in zip(variables, values, strict=True)]
    items = ["a"]
    logging.getLogger("shop.rpc").info("saw %s", items, extra={"status": "OK", "duration_ms": 1.5})
    for var, token in zip(variables, tokens, strict=True):
        var.reset(token)
    items.append("changed later")
    (line,) = _lines(stdout)
    assert line["msg"] == "saw ['a']"
    assert (line["request_id"], line["tenant"], line["method"]) == (
        "req-7",
        "t1",
        "/shop.x.v1.X/Get",
    )
    assert (line["service"], line["logger"], line["level"]) == ("svc", "shop.rpc", "info")
    assert (line["status"], line["duration_ms"]) == ("OK", 1.5)
    assert line["ts"].endswith("Z")
    assert len(line["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_an_exception_is_written_with_its_traceback(stdout: HeldStream) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("shop.rpc").exception("unhandled error")
    (line,) = _lines(stdout)
    assert line["msg"] == "unhandled error"
    assert "ValueError: boom" in line["exc"]
    assert "request_id" not in line  # outside a request


def test_logging_does_not_wait_for_the_write(stdout: HeldStream) -> None:
    started = time.perf_counter()
    for n in range(3):
        logging.getLogger("shop.rpc").info("line %d", n)
    assert time.perf_counter() - started < 1  # the held write would take 5 s each
    assert [line["msg"] for line in _lines(stdout)] == ["line 0", "line 1", "line 2"]
