"""A tuned single-process FastAPI app doing the work of the platform's webhook ingest
(`POST /v1/events/{source}`): the benchmark's peer, not part of the platform.

    PEER_WEBHOOK_SECRET=whsec_... PYTHONPATH=.:gen .venv/bin/python -m bench.peers.ingest \
        --port P --redis-url URL --source NAME --tenant T --queue NAME

Per delivery, the same work as the event gateway, with the gateway's own rules:
the Standard Webhooks signature (HMAC-SHA256) over the raw body against the
source's secret, within the timestamp tolerance; the body parsed and checked as
an event; then one Redis round trip (the queue kit's publish-once script: the
dedupe key by delivery id with the body's digest, and the stream entry) before
202, 200 for a duplicate, 409 for another body under a known id. uvicorn with
uvloop and httptools, no access log. With `--coalesce` concurrent deliveries share
that round trip, through the queue kit's `PublishCoalescer` as in the gateway.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from datetime import UTC, datetime, timedelta

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from redis.exceptions import RedisError

from services.event.domain import parse_event
from services.event.intake import dedupe_key
from services.event.signatures import Delivery, InvalidSignature, Verifier, decode_secret
from services.kit import errors
from services.kit.redis_client import create_redis
from services.kit.streams import Message, OncePublisher, PublishCoalescer, Queue

JSON = "application/json"
MAX_BODY = 256 * 1024
FUTURE_SKEW = timedelta(minutes=5)


def _answer(status: int, document: dict[str, object]) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type=JSON)


def build(args: argparse.Namespace) -> FastAPI:
    verifier = Verifier([decode_secret(os.environ["PEER_WEBHOOK_SECRET"])])
    # The gateway's own client: a blocking pool of 64 connections, 1 s timeouts.
    redis = create_redis(args.redis_url, timeout_s=1.0, max_connections=64, blocking=True)
    queue: OncePublisher = Queue(redis, args.queue)
    if args.coalesce:
        queue = PublishCoalescer(Queue(redis, args.queue))
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/v1/events/{source}")
    async def ingest(source: str, request: Request) -> Response:
        if source != args.source:
            return _answer(401, {"code": "unauthenticated", "message": "unknown source"})
        body = await request.body()
        if len(body) > MAX_BODY:
            return _answer(413, {"code": "payload_too_large", "message": "body too large"})
        headers = request.headers
        delivery = Delivery(
            message_id=headers.get("webhook-id", ""),
            timestamp=headers.get("webhook-timestamp", ""),
            signature=headers.get("webhook-signature", ""),
            body=body,
        )
        try:
            verifier.verify(delivery)
            now = datetime.now(UTC)
            event = parse_event(
                source,
                delivery.message_id,
                body,
                signed_at=datetime.fromtimestamp(int(delivery.timestamp), UTC),
                received_at=now,
                latest=now + FUTURE_SKEW,
            )
        except InvalidSignature as exc:
            return _answer(401, {"code": "unauthenticated", "message": str(exc)})
        except errors.InvalidArgument as exc:
            return _answer(400, {"code": "invalid_argument", "message": str(exc)})
        message = Message(
            id=event.key, tenant=args.tenant, type=event.type, payload=event.to_payload()
        )
        try:
            _, duplicate = await queue.publish_once(
                message,
                dedupe_key(args.tenant, event),
                digest=hashlib.sha256(body).hexdigest(),
            )
        except errors.IdempotencyKeyReused as exc:
            return _answer(409, {"code": "conflict", "message": str(exc)})
        except (RedisError, OSError):
            return _answer(503, {"code": "unavailable", "message": "the queue is unavailable"})
        answer = {"id": event.id, "duplicate": duplicate, "source": source}
        return _answer(200 if duplicate else 202, answer)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--coalesce", action="store_true")
    args = parser.parse_args()
    uvicorn.run(
        build(args), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
        access_log=False, log_level="warning", backlog=4096,
    )  # fmt: skip


if __name__ == "__main__":
    main()
