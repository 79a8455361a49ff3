"""Reading configuration from the environment, once, at start-up.

Each service has a frozen Config dataclass built by `from_env()` in its
`__main__`; nothing reads os.environ after that.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar


class ConfigError(ValueError):
    """A required setting is missing or malformed."""


def env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    """A string setting; ConfigError when required and absent."""
    value = env.get(name, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise ConfigError(f"{name} must be set")
    return value


N = TypeVar("N", int, float)


def _env_number(env: Mapping[str, str], name: str, default: N, parse: type[N]) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be {parse.__name__}, got {raw!r}") from exc


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """An integer setting."""
    return _env_number(env, name, default, int)


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """A number setting."""
    return _env_number(env, name, default, float)


# The platform CA, this process's certificate and its key (PEM files): all or none.
TLS_SETTINGS = ("SERVICE_TLS_CA", "SERVICE_TLS_CERT", "SERVICE_TLS_KEY")


@dataclass(frozen=True)
class ServiceTls:
    """The files of a process's service identity (services.kit.tls): the CA it trusts,
    its certificate and its key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ServiceTls | None:
        """The files `SERVICE_TLS_CA/CERT/KEY` name; None when none is set (plaintext)."""
        given = {name: env.get(name) or "" for name in TLS_SETTINGS}
        if not any(given.values()):
            return None
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} must be set too: service TLS needs "
                f"{', '.join(TLS_SETTINGS)} together, or none of them for plaintext"
            )
        return cls(*(Path(given[name]) for name in TLS_SETTINGS))

    def env(self) -> dict[str, str]:
        """The settings that name these files, for a process started with them."""
        return dict(zip(TLS_SETTINGS, map(str, (self.ca, self.cert, self.key)), strict=True))


@dataclass(frozen=True)
class ServerConfig:
    """What every gRPC server process needs: where to bind, log, trace and serve metrics,
    and its service identity."""

    bind: str
    log_level: str
    otlp_endpoint: str | None
    shutdown_grace_s: float
    # host:port of the Prometheus endpoint (services.kit.metrics); None: none served.
    metrics_bind: str | None = None
    # mTLS on the gRPC port and on every call this process makes; None: plaintext.
    tls: ServiceTls | None = None
    # host:port of a plaintext port serving only gRPC health (for probes that cannot
    # present a certificate); None: none.
    health_bind: str | None = None

    @classmethod
    def from_env(cls, prefix: str, env: Mapping[str, str] = os.environ) -> ServerConfig:
        """Read `<PREFIX>_GRPC_BIND`, `<PREFIX>_METRICS_BIND`, `<PREFIX>_HEALTH_BIND`,
        `LOG_LEVEL`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `SHUTDOWN_GRACE_S`, `SERVICE_TLS_*`."""
        return cls(
            bind=env_str(env, f"{prefix}_GRPC_BIND", "127.0.0.1:50051"),
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
            otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            shutdown_grace_s=env_float(env, "SHUTDOWN_GRACE_S", 5.0),
            metrics_bind=env.get(f"{prefix}_METRICS_BIND") or None,
            tls=ServiceTls.from_env(env),
            health_bind=env.get(f"{prefix}_HEALTH_BIND") or None,
        )


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for banners, status and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
