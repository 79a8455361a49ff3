"""User service configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.kit.config import ConfigError, ServerConfig, env_int, env_str


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost; the defaults are OWASP's minimum (19 MiB, 2 passes, 1 lane)."""

    time_cost: int = 2
    memory_kib: int = 19456
    parallelism: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Argon2Params:
        """Read `ARGON2_TIME_COST`, `ARGON2_MEMORY_KIB`, `ARGON2_PARALLELISM`."""
        d = cls()
        return cls(
            time_cost=env_int(env, "ARGON2_TIME_COST", d.time_cost),
            memory_kib=env_int(env, "ARGON2_MEMORY_KIB", d.memory_kib),
            parallelism=env_int(env, "ARGON2_PARALLELISM", d.parallelism),
        )


def _paths(raw: str) -> tuple[Path, ...]:
    paths = tuple(Path(p.strip()) for p in raw.split(",") if p.strip())
    if not paths:
        raise ConfigError("JWT_SIGNING_KEYS must name at least one key file")
    return paths


@dataclass(frozen=True)
class UserConfig:
    """Settings of the user service.

    `signing_keys` are PEM (PKCS8) Ed25519 private keys: the first signs, all
    are published in the JWKS. A rotation adds the next key second, waits for
    the edge to refetch the JWKS, moves it first, and drops the old key once
    the last token it signed has expired (`jwt_ttl_s`).
    """

    server: ServerConfig
    database_url: str
    redis_url: str
    db_pool_size: int
    cursor_secret: bytes
    jwt_issuer: str
    jwt_audience: str
    jwt_ttl_s: int
    signing_keys: tuple[Path, ...]
    argon2: Argon2Params
    login_max_failures: int
    login_failure_window_s: int
    # The longest an attempt on a much-failed account waits (services.user.throttle).
    login_max_delay_ms: int = 2000

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> UserConfig:
        return cls(
            server=ServerConfig.from_env("USER", env),
            database_url=env_str(env, "DATABASE_URL"),
            redis_url=env_str(env, "REDIS_URL"),
            db_pool_size=env_int(env, "USER_DB_POOL_SIZE", 5),
            cursor_secret=env_str(env, "CURSOR_SECRET").encode(),
            jwt_issuer=env_str(env, "JWT_ISSUER", "shop-platform"),
            jwt_audience=env_str(env, "JWT_AUDIENCE", "shop-api"),
            jwt_ttl_s=env_int(env, "JWT_TTL_S", 900),
            signing_keys=_paths(env_str(env, "JWT_SIGNING_KEYS")),
            argon2=Argon2Params.from_env(env),
            login_max_failures=env_int(env, "LOGIN_MAX_FAILURES", 5),
            login_failure_window_s=env_int(env, "LOGIN_FAILURE_WINDOW_S", 900),
            login_max_delay_ms=env_int(env, "LOGIN_MAX_DELAY_MS", 2000),
        )
