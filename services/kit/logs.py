"""Structured JSON logs: one event per line, stamped with the request context
(request id, tenant, user, method) and the current trace and span ids.

A process's records go through a queue (`logging.handlers.QueueHandler`) to one
writer thread, so no coroutine waits on the log file: the caller only stamps the
record with its request context (request id, tenant, user, method, trace and
span ids, read from contextvars, which the writer thread cannot see) and renders
its message; every 50 ms the writer formats the queued
records as JSON lines and writes them in one write, so a busy process wakes it
twenty times a second, not once per line.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import sys
import threading
import time
from collections import deque
from typing import Any

from services.kit import context, tracing

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# One encoder for every line (json.dumps with `default` builds a new one per call).
_ENCODER = json.JSONEncoder(default=str)
# Set on a record by the queue handler: the request context of the call that logged it.
_CONTEXT = "_shop_context"


def _context() -> dict[str, str]:
    """The request context a line carries: the fields that are set, in line order."""
    fields = {
        "request_id": context.request_id.get(),
        "tenant": context.tenant_id.get(),
        "user": context.user_id.get(),
        "method": context.method.get(),
    }
    found = {key: value for key, value in fields.items() if value}
    trace_id, span_id = tracing.current_ids()
    if trace_id:
        found["trace_id"] = trace_id
        found["span_id"] = span_id
    return found


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object with service and request context."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second = -1
        self._stamp = ""

    def _ts(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second, not per line
            self._second, self._stamp = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": self._ts(record.created),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        event.update(fields[_CONTEXT] if _CONTEXT in fields else _context())
        for key, value in fields.items():
            if key not in _RESERVED and key[0] != "_":
                event[key] = value
        if record.exc_info:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            event["exc"] = record.exc_text
        return _ENCODER.encode(event)


class _Writer(threading.Thread):
    """Formats and writes the queued records every `interval` seconds, all of them in
    one write: a burst of calls costs one wake-up of this thread, not one per line."""

    def __init__(self, stream: Any, formatter: JsonFormatter, interval: float = 0.05) -> None:
        super().__init__(name="log-writer", daemon=True)
        self._stream, self._formatter, self._interval = stream, formatter, interval
        self._records: deque[logging.LogRecord] = deque()
        self._stopping = threading.Event()

    def put_nowait(self, record: logging.LogRecord) -> None:
        """Queue a record (what QueueHandler calls; a deque append takes no lock)."""
        self._records.append(record)

    def run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.write_queued()
        self.write_queued()

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def write_queued(self) -> None:
        lines = []
        while self._records:
            record = self._records.popleft()
            try:
                lines.append(self._formatter.format(record))
            except Exception:  # a record that cannot be formatted loses its line only
                failed = {"level": "error", "msg": f"unformattable log record {record.msg!r}"}
                lines.append(_ENCODER.encode(failed))
        if lines:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()


class _ContextQueueHandler(logging.handlers.QueueHandler):
    """Queues records for the writer thread, stamped with the caller's request context."""

    def __init__(self, writer: _Writer, formatter: JsonFormatter) -> None:
        super().__init__(writer)  # type: ignore[arg-type]
        self._formatter = formatter

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.__dict__[_CONTEXT] = _context()
        # The message and the traceback now: their arguments may change after this call.
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        return record


_writer: _Writer | None = None


def configure(service: str, level: str = "INFO") -> None:
    """Send every log record of the process to stdout as JSON lines, written by a
    thread of their own (flushed at exit)."""
    global _writer
    _flush()
    formatter = JsonFormatter(service)
    _writer = _Writer(sys.stdout, formatter)
    _writer.start()
    # No line shows where a call came from or which process or thread made it, so
    # records skip finding them (logging's documented switches for that).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [_ContextQueueHandler(_writer, formatter)]
    root.setLevel(level.upper())


@atexit.register
def _flush() -> None:
    """Write the records still queued and stop the writer (at exit, or before a new one)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None
