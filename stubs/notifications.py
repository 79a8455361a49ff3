"""The fake notification provider (email and SMS): each message sent once per idempotency key.

    POST /v1/messages         send; `Idempotency-Key` required: 201 sent, 200 replayed
                              (`Idempotent-Replayed: true`), 409 the key reused for another
                              message (`idempotency_conflict`)
    GET  /v1/messages/{id}    one message of the tenant
    GET    /_admin/messages?to=&tenant=   {"items": [...], "count": n}: what was sent, oldest first
    DELETE /_admin/messages               forget every message

A body is `{"channel": "email" | "sms", "to", "subject", "body"}`: an email goes
to an address and has a subject, an SMS goes to an E.164 number (`+4915112345678`),
has no subject and at most 1,600 characters. Either may instead go to a platform
user (`user:<id>`), whose address the provider looks up itself: the platform's
notifier sends so, since the order service knows user ids, not addresses. A
message is the body plus `"id", "tenant", "idempotencyKey", "createdAt"`. Latency
and 5xx are injected through `PUT /_admin/faults` like every stub's (`phase:
"after"` sends the message and then answers 5xx, so a retry must not send it
twice). Everything lives in memory.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from stubs import (
    Keyed,
    UpstreamError,
    bad_request,
    fingerprint,
    format_ts,
    idempotency_key,
    only_fields,
    parse_object,
    str_field,
    tenant_of,
    utc_now,
)
from stubs.faults import FaultInjector, application

_FIELDS = ("channel", "to", "subject", "body")
CHANNELS = ("email", "sms")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{1,63}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_USER = re.compile(r"user:[^\x00-\x1f\x7f]{1,128}")
SMS_MAX_CHARS = 1600


@dataclass(frozen=True)
class MessageRequest:
    """A validated `POST /v1/messages` body."""

    channel: str
    to: str
    subject: str | None
    body: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MessageRequest:
        only_fields(data, _FIELDS)
        channel = data.get("channel")
        if channel not in CHANNELS:
            raise bad_request(f"channel must be one of {', '.join(CHANNELS)}")
        to = str_field(data, "to", low=1, high=320)
        to_user = _USER.fullmatch(to) is not None
        if channel == "email":
            if not to_user and not _EMAIL.fullmatch(to):
                raise bad_request(f"to must be an email address or user:<id>, got {to!r}")
            subject: str | None = str_field(data, "subject", low=1, high=200)
            body = str_field(data, "body", low=1, high=100_000)
        else:
            if not to_user and not _E164.fullmatch(to):
                raise bad_request(
                    f"to must be an E.164 phone number like +4915112345678 or user:<id>, got {to!r}"
                )
            if data.get("subject") is not None:
                raise bad_request("an sms has no subject")
            subject = None
            body = str_field(data, "body", low=1, high=SMS_MAX_CHARS)
        return cls(channel=channel, to=to, subject=subject, body=body)


@dataclass(frozen=True)
class Message:
    """One message the provider sent."""

    id: str
    tenant: str
    idempotency_key: str
    request: MessageRequest
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "idempotencyKey": self.idempotency_key,
            "channel": self.request.channel,
            "to": self.request.to,
            "subject": self.request.subject,
            "body": self.request.body,
            "createdAt": format_ts(self.created_at),
        }


class Outbox:
    """Every tenant's sent messages. No method awaits, so concurrent requests with one key
    send one message."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sent: dict[tuple[str, str], Message] = {}  # (tenant, id), oldest first
        self._keys: Keyed[Message] = Keyed("message")

    def send(self, tenant: str, key: str, request: MessageRequest) -> tuple[Message, bool]:
        """The message sent under this key (replayed), or a new one; and whether it is new."""
        request_fingerprint = fingerprint(request)
        sent = self._keys.made(tenant, key, request_fingerprint)
        if sent is not None:
            return sent, False
        message = Message(f"msg_{uuid.uuid4().hex}", tenant, key, request, utc_now())
        self._sent[tenant, message.id] = message
        self._keys.remember(tenant, key, request_fingerprint, message)
        return message, True

    def get(self, tenant: str, message_id: str) -> Message:
        message = self._sent.get((tenant, message_id))
        if message is None:
            raise UpstreamError(404, "not_found", f"message {message_id} not found")
        return message

    def sent(self, to: str | None, tenant: str | None) -> list[Message]:
        return [
            m
            for m in self._sent.values()
            if to in (None, m.request.to) and tenant in (None, m.tenant)
        ]


def _optional_query(request: web.Request, name: str) -> str | None:
    given = request.query.getall(name, [])
    if len(given) > 1 or (given and not 0 < len(given[0]) <= 320):
        raise bad_request(f"{name} may be given once (1-320 characters)")
    return given[0] if given else None


class NotificationsApi:
    """The HTTP handlers over an Outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def send(self, request: web.Request) -> web.Response:
        tenant, key = tenant_of(request), idempotency_key(request)
        message_request = MessageRequest.from_json(parse_object(await request.read()))
        # Nothing below awaits: the key check and recording the message are one step.
        message, created = self.outbox.send(tenant, key, message_request)
        if created:
            headers = {"Location": f"/v1/messages/{message.id}"}
            return web.json_response(message.to_json(), status=201, headers=headers)
        return web.json_response(message.to_json(), headers={"Idempotent-Replayed": "true"})

    async def read_one(self, request: web.Request) -> web.Response:
        message = self.outbox.get(tenant_of(request), request.match_info["id"])
        return web.json_response(message.to_json())

    async def sent(self, request: web.Request) -> web.Response:
        to, tenant = _optional_query(request, "to"), _optional_query(request, "tenant")
        items = [m.to_json() for m in self.outbox.sent(to, tenant)]
        return web.json_response({"items": items, "count": len(items)})

    async def reset(self, request: web.Request) -> web.Response:
        self.outbox.reset()
        return web.json_response({"status": "reset"})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self.send),
            web.get("/v1/messages/{id}", self.read_one),
            web.get("/_admin/messages", self.sent),
            web.delete("/_admin/messages", self.reset),
        ]


def create_app(data_dir: Path, injector: FaultInjector) -> web.Application:
    """The notification app, with no messages yet (`data_dir` is unused: nothing is seeded)."""
    return application(NotificationsApi(Outbox()).routes(), injector)
