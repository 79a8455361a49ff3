"""The one way a process builds its MongoDB client from a MONGO_URL.

While the process exports spans, every command is a CLIENT span, child of the
span that sends it: `<command> <database>.<collection>` with the OpenTelemetry
database attributes and never the command's documents (they hold shipment and
customer data). A PyMongo command listener makes them, since OpenTelemetry's
PyMongo instrumentation has no release for the OpenTelemetry version the
platform pins; the listener is called in the task that runs the command, so
the current span is the caller's.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from pymongo import AsyncMongoClient, monitoring

from services.kit import tracing

tracer = trace.get_tracer("shop.mongo")


def create_mongo(url: str, **options: Any) -> AsyncMongoClient[dict[str, Any]]:
    """A client of `url` (credentials and database in the URL), timezone-aware."""
    if tracing.exporting():
        options["event_listeners"] = [*options.get("event_listeners", ()), CommandSpans()]
    return AsyncMongoClient(url, tz_aware=True, **options)


class CommandSpans(monitoring.CommandListener):
    """A span from each command's start to its success or failure."""

    def __init__(self) -> None:
        self._open: dict[tuple[Any, int], trace.Span] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        collection = event.command.get(event.command_name)
        host, port = event.connection_id
        attributes: dict[str, str | int] = {
            "db.system.name": "mongodb",
            "db.namespace": event.database_name,
            "db.operation.name": event.command_name,
            "server.address": str(host),
        }
        if port is not None:
            attributes["server.port"] = port
        name = f"{event.command_name} {event.database_name}"
        if isinstance(collection, str):
            attributes["db.collection.name"] = collection
            name = f"{name}.{collection}"
        span = tracer.start_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes)
        self._open[(event.connection_id, event.request_id)] = span

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        span = self._open.pop((event.connection_id, event.request_id), None)
        if span is not None:
            span.end()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        span = self._open.pop((event.connection_id, event.request_id), None)
        if span is not None:
            span.set_status(trace.StatusCode.ERROR, f"{event.command_name} failed")
            span.end()
