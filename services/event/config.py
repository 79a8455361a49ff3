"""Event gateway and event worker configuration, read once from the environment."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from services.event.domain import SOURCE_NAME
from services.event.signatures import Verifier, decode_secret
from services.kit.config import ConfigError, ServerConfig, env_float, env_int, env_str
from services.kit.identity import TENANT_PATTERN
from services.kit.streams import WorkerConfig
from services.kit.upstream import UpstreamPolicy

# The queue courier events go through unless EVENT_QUEUE names another.
EVENTS_QUEUE = "events"


@dataclass(frozen=True)
class WebhookSource:
    """A sender of webhooks (a courier): the tenant its events belong to, its secrets."""

    name: str
    tenant: str
    verifier: Verifier


def parse_sources(text: str) -> dict[str, WebhookSource]:
    """`{"<source>": {"tenant": "<tenant>", "secrets": ["whsec_...", ...]}, ...}`."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"WEBHOOK_SOURCES is not JSON: {exc}") from None
    if not isinstance(document, dict) or not document:
        raise ConfigError("WEBHOOK_SOURCES must be a non-empty JSON object of sources")
    sources: dict[str, WebhookSource] = {}
    for name, spec in document.items():
        where = f"WEBHOOK_SOURCES[{name!r}]"
        if not SOURCE_NAME.fullmatch(name):
            raise ConfigError(f"{where}: a source name is lowercase [a-z0-9_-], 1-64 characters")
        if not isinstance(spec, dict) or set(spec) != {"tenant", "secrets"}:
            raise ConfigError(f'{where}: expected {{"tenant": "...", "secrets": ["whsec_..."]}}')
        tenant, secrets = spec["tenant"], spec["secrets"]
        if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
            raise ConfigError(f"{where}: tenant must be a tenant id")
        if not isinstance(secrets, list) or not secrets:
            raise ConfigError(f"{where}: secrets must be a non-empty list")
        try:
            keys = [decode_secret(secret) for secret in secrets if isinstance(secret, str)]
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if len(keys) != len(secrets):
            raise ConfigError(f"{where}: every secret must be a string")
        sources[name] = WebhookSource(name, tenant, Verifier(keys))
    return sources


@dataclass(frozen=True)
class EventConfig:
    """Settings of the event gateway (ingestion and dead-letter admin)."""

    server: ServerConfig
    redis_url: str
    queue: str
    sources: Mapping[str, WebhookSource]
    default_source: str
    max_body_bytes: int
    redis_timeout_s: float
    redis_connections: int
    cursor_secret: bytes
    max_future_skew_s: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> EventConfig:
        sources = parse_sources(env_str(env, "WEBHOOK_SOURCES"))
        default = env_str(env, "WEBHOOK_DEFAULT_SOURCE", next(iter(sources)))
        if default not in sources:
            raise ConfigError(f"WEBHOOK_DEFAULT_SOURCE {default!r} is not in WEBHOOK_SOURCES")
        return cls(
            server=ServerConfig.from_env("EVENT", env),
            redis_url=env_str(env, "REDIS_URL"),
            queue=env_str(env, "EVENT_QUEUE", EVENTS_QUEUE),
            sources=sources,
            default_source=default,
            max_body_bytes=env_int(env, "WEBHOOK_MAX_BODY_BYTES", 256 * 1024),
            redis_timeout_s=env_float(env, "EVENT_REDIS_TIMEOUT_S", 1.0),
            redis_connections=env_int(env, "EVENT_REDIS_CONNECTIONS", 64),
            cursor_secret=env_str(env, "CURSOR_SECRET").encode(),
            max_future_skew_s=env_int(env, "EVENT_MAX_FUTURE_SKEW_S", 300),
        )


@dataclass(frozen=True)
class WorkerProcessConfig:
    """Settings of one event worker process."""

    server: ServerConfig  # its health endpoint
    redis_url: str
    queue: str
    mongo_url: str
    routing_url: str
    routing: UpstreamPolicy
    worker: WorkerConfig

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WorkerProcessConfig:
        consumer = env_str(env, "EVENT_WORKER_NAME", f"{socket.gethostname()}-{os.getpid()}")
        worker = WorkerConfig.from_env("EVENT_WORKER", env, consumer)
        # One routing call per attempt: retries wait on the queue's delayed set,
        # never in a handler slot. The 2 s upstream gets 5 s per attempt. Dozens of
        # calls are in flight at once, so only a long run of failures means an
        # outage: occasional errors must not open the breaker for everyone.
        defaults = {
            "ROUTING_MAX_ATTEMPTS": "1",
            "ROUTING_ATTEMPT_TIMEOUT_S": "5",
            "ROUTING_DEADLINE_S": "5.5",
            "ROUTING_BREAKER_FAILURES": "20",
            "ROUTING_MAX_CONNECTIONS": str(worker.concurrency),
        }
        return cls(
            server=ServerConfig.from_env("EVENT_WORKER", env),
            redis_url=env_str(env, "REDIS_URL"),
            queue=env_str(env, "EVENT_QUEUE", EVENTS_QUEUE),
            mongo_url=env_str(env, "MONGO_URL"),
            routing_url=env_str(env, "ROUTING_URL"),
            routing=UpstreamPolicy.from_env("ROUTING", {**defaults, **env}),
            worker=worker,
        )
