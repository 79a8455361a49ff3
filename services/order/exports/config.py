"""Export worker configuration, read once from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import ConfigError, ServerConfig, env_float, env_int, env_str
from services.kit.streams import WorkerConfig

# The queue the relay routes `report_export` events to unless EXPORT_QUEUE names another.
EXPORTS_QUEUE = "exports"


@dataclass(frozen=True)
class ExportSettings:
    """How a job is written: `chunk_rows` orders per transaction, `pause_s` between
    chunks, and after `slice_s` the job yields its slot and continues later."""

    chunk_rows: int = 500
    pause_s: float = 0.05
    slice_s: float = 8.0

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise ConfigError(f"EXPORT_CHUNK_ROWS must be at least 1, got {self.chunk_rows}")
        if self.pause_s < 0:
            raise ConfigError("EXPORT_PAUSE_S must not be negative")
        if self.slice_s <= 0:
            raise ConfigError("EXPORT_SLICE_S must be positive")


@dataclass(frozen=True)
class ExportWorkerConfig:
    """Settings of one export worker process; any number may run."""

    server: ServerConfig  # its health endpoint
    database_url: str
    redis_url: str
    queue: str
    worker: WorkerConfig
    export: ExportSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ExportWorkerConfig:
        consumer = env_str(env, "EXPORT_WORKER_NAME", f"{socket.gethostname()}-{os.getpid()}")
        # Exports are background work: two jobs at a time per process by default.
        worker = WorkerConfig.from_env(
            "EXPORT_WORKER", {"EXPORT_WORKER_CONCURRENCY": "2", **env}, consumer
        )
        export = ExportSettings(
            chunk_rows=env_int(env, "EXPORT_CHUNK_ROWS", ExportSettings.chunk_rows),
            pause_s=env_float(env, "EXPORT_PAUSE_S", ExportSettings.pause_s),
            slice_s=env_float(env, "EXPORT_SLICE_S", ExportSettings.slice_s),
        )
        if export.slice_s >= worker.handler_timeout_s:
            raise ConfigError(
                f"EXPORT_SLICE_S ({export.slice_s:g}) must be shorter than "
                f"EXPORT_WORKER_HANDLER_TIMEOUT_S ({worker.handler_timeout_s:g})"
            )
        return cls(
            server=ServerConfig.from_env("EXPORT_WORKER", env),
            database_url=env_str(env, "DATABASE_URL"),
            redis_url=env_str(env, "REDIS_URL"),
            queue=env_str(env, "EXPORT_QUEUE", EXPORTS_QUEUE),
            worker=worker,
            export=export,
        )
