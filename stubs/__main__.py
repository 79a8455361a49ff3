"""Run one stub: `python -m stubs <name> --host 127.0.0.1 --port 8101 [--data DIR]`.

The names: erp, notifications, payments, routing, warehouse.

`STUB_FAULTS` (JSON, the body `PUT /_admin/faults` takes) sets the faults it
starts with; unset or empty, a stub starts with its `DEFAULT_FAULTS` entry, if
any, else none. Each request is logged as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import uvloop
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from stubs import TENANT_HEADER, UpstreamError, erp, notifications, payments, routing, warehouse
from stubs.faults import FaultConfig, FaultInjector

APPS: dict[str, Callable[[Path, FaultInjector], web.Application]] = {
    "erp": erp.create_app,
    "notifications": notifications.create_app,
    "payments": payments.create_app,
    "routing": routing.create_app,
    "warehouse": warehouse.create_app,
}
# What a stub is like when nobody asks for faults: a real routing engine takes seconds.
DEFAULT_FAULTS: dict[str, FaultConfig] = {"routing": FaultConfig(latency_ms=2000)}
DATA_DIR = Path(__file__).resolve().parent / "data"


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON object per request, with the fault injected into it, if any."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_s: float) -> None:
        event = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "stub": self.logger.name.removeprefix("stubs."),
            "method": request.method,
            "path": request.path_qs,
            # An aborted request got no answer at all, whatever aiohttp thinks it sent.
            "status": None if request.get("fault") == "down" else response.status,
            "ms": round(time_s * 1000, 1),
            "tenant": request.headers.get(TENANT_HEADER),
            "fault": request.get("fault"),
            # The caller's request id and trace context, as the platform's upstream client
            # sends them: the span is the caller's attempt.
            "request_id": request.headers.get("x-request-id"),
            **_trace_ids(request.headers.get("traceparent", "")),
        }
        self.logger.info(json.dumps(event))


def _trace_ids(traceparent: str) -> dict[str, str]:
    """trace_id and span_id of a W3C traceparent, or nothing if there is none."""
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return {}
    return {"trace_id": parts[1], "span_id": parts[2]}


class JsonLines(logging.Formatter):
    """Every other record (aiohttp's own, a traceback) as one JSON object too."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if message.startswith("{"):  # an event already written as JSON
            return message
        event = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stubs", description=__doc__)
    parser.add_argument("name", choices=sorted(APPS), help="which upstream to fake")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="seed data directory")
    args = parser.parse_args(argv)
    faults = DEFAULT_FAULTS.get(args.name, FaultConfig())
    text = os.environ.get("STUB_FAULTS")
    if text:  # even "{}" replaces the default: that is how tests ask for a fast stub
        try:
            faults = FaultConfig.from_text(text)
        except UpstreamError as exc:
            parser.error(f"STUB_FAULTS: {exc.message}")
    app = APPS[args.name](args.data, FaultInjector(faults))
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    serving = {"event": "serving", "stub": args.name, "port": args.port, "faults": faults.to_json()}
    logging.getLogger("stubs").info(json.dumps(serving))
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=logging.getLogger(f"stubs.{args.name}"),
        access_log_class=JsonAccessLogger,
        # A client that gives up (e.g. on an injected hang) cancels its handler.
        handler_cancellation=True,
        # Injected hangs must not hold up a stop.
        shutdown_timeout=1.0,
        print=None,
        loop=uvloop.new_event_loop(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
