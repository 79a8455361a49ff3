"""The edge's request limits, all counted inside Envoy except login and registration.

- Per route, in each Envoy: a token bucket that sheds load before a Python
  process saturates (`route_bucket`, on every route).
- Per client address and per verified user, shared by every Envoy of the edge:
  a token bucket per caller (dynamic descriptors, `max_dynamic_descriptors` of
  them) whose cost is scaled by the size of the edge's local cluster, the
  cluster that lists the Envoys themselves (`local_cluster_rate_limit`). With N
  Envoys listed each one admits 1/N of the quota, so the edge as a whole admits
  the quota without a call out of Envoy.
- Login and registration attempts per address: counted exactly, once for all
  Envoys, by the rate-limit service in Redis (the routes send those descriptors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# The cluster that lists this edge's Envoys; its size is the N that shares the quotas.
LOCAL_CLUSTER = "edge_replicas"
LOCAL_RATELIMIT = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)
_FULL = {"numerator": 100, "denominator": "HUNDRED"}


@dataclass(frozen=True)
class Quota:
    """`requests` per `per_s` seconds for each caller, refilled continuously; a caller
    idle for a whole window may spend it at once (the bucket holds `requests`)."""

    requests: int
    per_s: int = 1

    def __post_init__(self) -> None:
        if self.requests < 1 or self.per_s < 1:
            raise ValueError(f"a quota needs at least 1 request per 1 s, not {self}")

    @property
    def retry_after_s(self) -> int:
        """Whole seconds until one more request's worth has refilled in a lone Envoy."""
        return max(1, math.ceil(self.per_s / self.requests))


@dataclass(frozen=True)
class EdgeLimits:
    """The limits of one edge: per-route buckets of each Envoy (requests per second,
    burst twice that) and the per-address and per-user quotas of the whole edge."""

    route_rps: int = 500
    credentials_rps: int = 10
    address: Quota = field(default_factory=lambda: Quota(200))
    user: Quota = field(default_factory=lambda: Quota(50))
    # Callers with a bucket of their own in each Envoy, per quota; the least recently
    # seen lose theirs (and start again full) beyond that.
    callers: int = 100_000


def route_bucket(name: str, rps: int) -> dict[str, Any]:
    """A route's own token bucket in this Envoy (typed_per_filter_config)."""
    return {
        "@type": LOCAL_RATELIMIT,
        "stat_prefix": f"route_{name}",
        "token_bucket": {"max_tokens": 2 * rps, "tokens_per_fill": rps, "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": "edge.local_limit.enabled", "default_value": _FULL},
        "filter_enforced": {"runtime_key": "edge.local_limit.enforced", "default_value": _FULL},
        # The bucket refills every second.
        "response_headers_to_add": [_header("retry-after", "1")],
    }


def _header(key: str, value: str) -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _shared(policy: str, action: dict[str, Any], quota: Quota, callers: int) -> dict[str, Any]:
    """One quota per caller for the whole edge: a bucket per descriptor value, each
    request costing N tokens where N is the local cluster's membership."""
    retry = quota.retry_after_s
    return {
        "@type": LOCAL_RATELIMIT,
        "stat_prefix": f"edge_{policy}",
        "filter_enabled": {"runtime_key": f"edge.{policy}_limit.enabled", "default_value": _FULL},
        "filter_enforced": {"runtime_key": f"edge.{policy}_limit.enforced", "default_value": _FULL},
        "rate_limits": [{"actions": [action]}],
        "descriptors": [
            {
                # A key without a value: one bucket per value seen.
                "entries": [{"key": policy}],
                "token_bucket": {
                    "max_tokens": quota.requests,
                    "tokens_per_fill": quota.requests,
                    "fill_interval": f"{quota.per_s}s",
                },
            }
        ],
        "max_dynamic_descriptors": callers,
        "local_cluster_rate_limit": {},
        "rate_limited_as_resource_exhausted": True,
        # The same hints the rate-limit service gives (IETF RateLimit headers).
        "response_headers_to_add": [
            _header("retry-after", str(retry)),
            _header("ratelimit", f'"{policy}";r=0;t={retry}'),
            _header("ratelimit-policy", f'"{policy}";q={quota.requests};w={quota.per_s}'),
        ],
    }


def address_limit(limits: EdgeLimits) -> dict[str, Any]:
    """Per client address (the TCP peer: X-Forwarded-For is not trusted)."""
    action: dict[str, Any] = {"remote_address": {}}
    return _shared("remote_address", action, limits.address, limits.callers)


def user_limit(limits: EdgeLimits, user_header: str) -> dict[str, Any]:
    """Per verified user (the token's `sub`, which jwt_authn put in `user_header`)."""
    action = {
        "request_headers": {
            "header_name": user_header,
            "descriptor_key": "user",
            "skip_if_absent": True,
        }
    }
    return _shared("user", action, limits.user, limits.callers)


def credentials_limit(method: str) -> dict[str, Any]:
    """The rate-limit service's per-address count of one credential method's attempts."""
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
        "rate_limits": [
            {"actions": [{"generic_key": {"descriptor_value": method}}, {"remote_address": {}}]}
        ],
    }
