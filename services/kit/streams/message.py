"""A queued message and its flat form in a Redis stream entry.

Every field is stored as bytes under its own name (`id`, `tenant`, `type`,
`payload`, `attempt`, `last_error`, `traceparent`, `enqueued_at_ms`), so an
entry reads the same in redis-cli as in code and a retry or a replay copies
fields without knowing what the payload is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import propagate

# A stream entry's fields as redis-py returns them (the client must not decode responses).
Fields = Mapping[bytes, bytes]
MAX_ERROR_CHARS = 500
_REQUIRED = (b"id", b"tenant", b"type", b"payload")


@dataclass(frozen=True)
class Message:
    """One unit of work on a queue.

    `id` is the message's own key (an event id, an order id): it survives
    retries and dead-letter replays, so handlers deduplicate on it. `attempt`
    counts failed attempts so far and `last_error` says why the last one
    failed. `entry_id` is where this delivery sits in the stream; it is set
    when the message is read and never stored.
    """

    id: str
    tenant: str
    type: str
    payload: bytes
    attempt: int = 0
    last_error: str = ""
    traceparent: str = ""
    enqueued_at_ms: int = 0
    entry_id: str = ""


class MalformedMessage(ValueError):
    """A stream entry that is not a message (missing or unreadable fields)."""


def now_ms() -> int:
    """Wall-clock milliseconds: the unit of stream ids and of the delayed set's scores."""
    return time.time_ns() // 1_000_000


def current_traceparent() -> str:
    """The W3C traceparent of the active span, or '' outside one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def describe_error(exc: BaseException) -> str:
    """`Type: message`, short enough to store with every retry."""
    text = str(exc)
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return truncate(described)


def truncate(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` cut to `limit` characters, marked when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def encode(message: Message) -> dict[str, bytes]:
    """The stream entry fields of `message` (without `entry_id`, which Redis assigns)."""
    return {
        "id": message.id.encode(),
        "tenant": message.tenant.encode(),
        "type": message.type.encode(),
        "payload": bytes(message.payload),
        "attempt": str(message.attempt).encode(),
        "last_error": message.last_error.encode(),
        "traceparent": message.traceparent.encode(),
        "enqueued_at_ms": str(message.enqueued_at_ms).encode(),
    }


def decode(entry_id: str, fields: Fields | None) -> Message:
    """The message in a stream entry; MalformedMessage when it is not one."""
    if fields is None:
        raise MalformedMessage("the entry has no fields (deleted)")
    missing = [name.decode() for name in _REQUIRED if name not in fields]
    if missing:
        raise MalformedMessage(f"missing field(s): {', '.join(missing)}")
    try:
        message = Message(
            id=fields[b"id"].decode(),
            tenant=fields[b"tenant"].decode(),
            type=fields[b"type"].decode(),
            payload=bytes(fields[b"payload"]),
            attempt=int(fields.get(b"attempt", b"0")),
            last_error=fields.get(b"last_error", b"").decode(),
            traceparent=fields.get(b"traceparent", b"").decode(),
            enqueued_at_ms=int(fields.get(b"enqueued_at_ms", b"0")),
            entry_id=entry_id,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"unreadable field: {exc}") from None
    if not message.id or not message.tenant:
        raise MalformedMessage("id and tenant must not be empty")
    if message.attempt < 0:
        raise MalformedMessage(f"attempt must not be negative, got {message.attempt}")
    return message


def decode_lenient(entry_id: str, fields: Fields) -> Message:
    """Whatever message an entry holds, defaults for what is missing or unreadable.

    For showing dead letters, which may be there precisely because they were
    malformed.
    """

    def text(name: bytes) -> str:
        return fields.get(name, b"").decode(errors="replace")

    return Message(
        id=text(b"id"),
        tenant=text(b"tenant"),
        type=text(b"type"),
        payload=bytes(fields.get(b"payload", b"")),
        attempt=int_field(fields, b"attempt"),
        last_error=text(b"last_error"),
        traceparent=text(b"traceparent"),
        enqueued_at_ms=int_field(fields, b"enqueued_at_ms"),
        entry_id=entry_id,
    )


def as_text(value: bytes | str) -> str:
    """A reply value as text (entry ids, script replies)."""
    return value.decode() if isinstance(value, bytes) else value


def int_field(fields: Fields, name: bytes) -> int:
    """An integer field, 0 when absent or unreadable."""
    try:
        return int(fields.get(name, b"0"))
    except ValueError:
        return 0
