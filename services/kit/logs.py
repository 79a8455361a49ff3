"""Structured JSON logs: one event per line, stamped with the request context
(request id, tenant, user, method) and the current trace and span ids.

A process's records go through a queue to one writer thread
(`logging.handlers.QueueListener`), so no coroutine waits on the log file: the
caller only stamps the record with its request context (request id, tenant,
user, method, trace and span ids, read from contextvars that the writer thread
cannot see) and renders its message; the writer formats the JSON line and writes it.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time
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


class _ContextQueueHandler(logging.handlers.QueueHandler):
    """Queues records for the writer thread, stamped with the caller's request context."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord], formatter: JsonFormatter):
        super().__init__(records)
        self._formatter = formatter

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.__dict__[_CONTEXT] = _context()
        # The message and the traceback now: their arguments may change after this call.
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        return record


class _LineWriter(logging.StreamHandler):  # type: ignore[type-arg]
    """The writer thread's handler: lines that arrive together go out in one write."""

    BATCH = 256

    def __init__(self, stream: Any, records: queue.SimpleQueue[logging.LogRecord]) -> None:
        super().__init__(stream)
        self._records = records
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        # More records queued behind this one: write them all together.
        if len(self._lines) >= self.BATCH or self._records.empty():
            self.write_pending()

    def write_pending(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": "log write failed"}))


_listener: logging.handlers.QueueListener | None = None
_writer: _LineWriter | None = None


def configure(service: str, level: str = "INFO") -> None:
    """Send every log record of the process to stdout as JSON lines, written by a
    thread of their own (flushed at exit)."""
    global _listener, _writer
    _flush()
    formatter = JsonFormatter(service)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _writer = _LineWriter(sys.stdout, records)
    _writer.setFormatter(formatter)
    _listener = logging.handlers.QueueListener(records, _writer)
    _listener.start()
    # No line shows where a call came from or which process or thread made it, so
    # records skip finding them (logging's documented switches for that).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [_ContextQueueHandler(records, formatter)]
    root.setLevel(level.upper())


@atexit.register
def _flush() -> None:
    """Write the records still queued and stop the writer (at exit, or before a new one)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
    if _writer is not None:
        _writer.write_pending()
