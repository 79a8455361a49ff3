"""Rate-limit service configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import ConfigError, ServerConfig, env_float, env_str
from services.ratelimit.rules import Rules

# Login and registration attempts per client address, counted exactly for every
# Envoy (the edge sends these descriptors on those routes only; the per-user and
# per-address quotas are counted in Envoy itself: services/launcher/edge_limits.py).
DEFAULT_RULES = (
    "generic_key:login,remote_address=20/minute; generic_key:register,remote_address=10/minute"
)


@dataclass(frozen=True)
class RateLimitConfig:
    server: ServerConfig
    redis_url: str
    # Bounds each Redis connect and reply: Envoy stops waiting for us long before
    # redis-py's 5 s default, and fails open.
    redis_timeout_s: float
    rules: Rules

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RateLimitConfig:
        try:
            rules = Rules.parse(env_str(env, "RATELIMIT_RULES", DEFAULT_RULES))
        except ValueError as exc:
            raise ConfigError(f"RATELIMIT_RULES: {exc}") from exc
        return cls(
            server=ServerConfig.from_env("RATELIMIT", env),
            redis_url=env_str(env, "REDIS_URL"),
            redis_timeout_s=env_float(env, "RATELIMIT_REDIS_TIMEOUT_S", 0.25),
            rules=rules,
        )
