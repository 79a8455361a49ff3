"""Notifier configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import ConfigError, ServerConfig, env_float, env_int, env_str
from services.kit.upstream import UpstreamPolicy


@dataclass(frozen=True)
class DeliveryConfig:
    """How the notifier claims and retries.

    `batch` rows are claimed at once and sent side by side; each claim is a lease
    of `lease_s`, after which a row whose notifier died is due again. A failed
    send is due again after a full-jitter backoff (`retry_base_s` doubling up to
    `retry_cap_s`); after `max_attempts` the notification is `failed`.
    """

    batch: int = 16
    poll_ms: int = 500
    lease_s: float = 30.0
    max_attempts: int = 8
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    db_retry_cap_s: float = 5.0

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"NOTIFIER_BATCH must be at least 1, got {self.batch}")
        if self.poll_ms < 1:
            raise ConfigError(f"NOTIFIER_POLL_MS must be at least 1, got {self.poll_ms}")
        if self.max_attempts < 1:
            raise ConfigError(f"NOTIFIER_MAX_ATTEMPTS must be at least 1, got {self.max_attempts}")
        if self.retry_base_s <= 0 or self.retry_cap_s < self.retry_base_s:
            raise ConfigError("NOTIFIER_RETRY_BASE_S must be > 0 and at most NOTIFIER_RETRY_CAP_S")


@dataclass(frozen=True)
class NotifierConfig:
    """Settings of one notifier process; any number may run against one database."""

    server: ServerConfig  # its health endpoint
    name: str
    database_url: str
    db_pool_size: int
    notify_url: str
    notify: UpstreamPolicy
    delivery: DeliveryConfig

    def __post_init__(self) -> None:
        # A lease that ran out while the send was still in flight would let a second
        # notifier send the same row at the same time (harmless at the provider,
        # which keeps one message per key, but wasted).
        if self.delivery.lease_s <= self.notify.deadline_s:
            raise ConfigError(
                f"NOTIFIER_LEASE_S ({self.delivery.lease_s}) must exceed "
                f"NOTIFY_DEADLINE_S ({self.notify.deadline_s})"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> NotifierConfig:
        delivery = DeliveryConfig(
            batch=env_int(env, "NOTIFIER_BATCH", DeliveryConfig.batch),
            poll_ms=env_int(env, "NOTIFIER_POLL_MS", DeliveryConfig.poll_ms),
            lease_s=env_float(env, "NOTIFIER_LEASE_S", DeliveryConfig.lease_s),
            max_attempts=env_int(env, "NOTIFIER_MAX_ATTEMPTS", DeliveryConfig.max_attempts),
            retry_base_s=env_float(env, "NOTIFIER_RETRY_BASE_S", DeliveryConfig.retry_base_s),
            retry_cap_s=env_float(env, "NOTIFIER_RETRY_CAP_S", DeliveryConfig.retry_cap_s),
        )
        # Retries inside one send are few and quick; longer outages are the
        # notifier's own backoff, between claims, with the row's lease released.
        defaults = {
            "NOTIFY_ATTEMPT_TIMEOUT_S": "2",
            "NOTIFY_DEADLINE_S": "5",
            "NOTIFY_MAX_CONNECTIONS": str(delivery.batch),
        }
        return cls(
            server=ServerConfig.from_env("NOTIFIER", env),
            name=env_str(env, "NOTIFIER_NAME", f"notifier-{os.getpid()}"),
            database_url=env_str(env, "DATABASE_URL"),
            db_pool_size=env_int(env, "NOTIFIER_DB_POOL_SIZE", 4),
            notify_url=env_str(env, "NOTIFY_URL"),
            notify=UpstreamPolicy.from_env("NOTIFY", {**defaults, **env}),
            delivery=delivery,
        )
