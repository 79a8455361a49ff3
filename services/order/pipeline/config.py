"""Order pipeline configuration, read once from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import ServerConfig, env_float, env_int, env_str
from services.kit.streams import WorkerConfig
from services.kit.upstream import UpstreamPolicy
from services.order.pipeline.reconciler import ReconcilerConfig

# The queue the relay moves the order outbox's events to (RELAY_ROUTES: order=orders).
ORDERS_QUEUE = "orders"


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of one pipeline process; any number may run (ORDER_PIPELINES)."""

    server: ServerConfig  # its health endpoint
    database_url: str
    redis_url: str
    inventory_target: str
    payments_url: str
    queue: str
    worker: WorkerConfig
    payments: UpstreamPolicy
    currency: str
    hold_s: int  # how long a reservation is held for its charge
    reconciler: ReconcilerConfig
    db_pool_size: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> PipelineConfig:
        consumer = env_str(env, "ORDER_PIPELINE_NAME", f"{socket.gethostname()}-{os.getpid()}")
        worker = WorkerConfig.from_env(
            "ORDER_PIPELINE", {"ORDER_PIPELINE_CONCURRENCY": "16", **env}, consumer
        )
        # A charge is keyed, so its client may resend it on a timeout or a 502/503/504;
        # the whole call stays well inside the handler's timeout.
        defaults = {
            "PAYMENTS_ATTEMPT_TIMEOUT_S": "3",
            "PAYMENTS_DEADLINE_S": "8",
            "PAYMENTS_MAX_ATTEMPTS": "3",
            "PAYMENTS_MAX_CONNECTIONS": str(worker.concurrency),
        }
        return cls(
            server=ServerConfig.from_env("ORDER_PIPELINE", env),
            database_url=env_str(env, "DATABASE_URL"),
            redis_url=env_str(env, "REDIS_URL"),
            inventory_target=env_str(env, "INVENTORY_GRPC_TARGET"),
            payments_url=env_str(env, "PAYMENTS_URL"),
            queue=env_str(env, "ORDER_PIPELINE_QUEUE", ORDERS_QUEUE),
            worker=worker,
            payments=UpstreamPolicy.from_env("PAYMENTS", {**defaults, **env}),
            currency=env_str(env, "PAYMENTS_CURRENCY", "EUR"),
            hold_s=env_int(env, "ORDER_PIPELINE_HOLD_S", 3600),
            reconciler=ReconcilerConfig(
                interval_s=env_float(env, "RECONCILE_INTERVAL_S", 2.0),
                pending_grace_s=env_float(env, "RECONCILE_PENDING_GRACE_S", 60.0),
                unknown_after_s=env_float(env, "RECONCILE_UNKNOWN_AFTER_S", 1.0),
                batch=env_int(env, "RECONCILE_BATCH", 50),
            ),
            # Each handler uses one connection at a time; the reconciler one more.
            db_pool_size=env_int(env, "ORDER_PIPELINE_DB_POOL_SIZE", worker.concurrency + 2),
        )
