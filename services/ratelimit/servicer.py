"""gRPC adapter for Envoy's global rate limiting: RateLimitRequest in, decision, response out."""

from __future__ import annotations

import time
from collections.abc import Callable

from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import duration_pb2

from services.kit import calls, metrics
from services.ratelimit.rules import Descriptor
from services.ratelimit.usecases import Decision, DescriptorStatus, RateLimiter

Context = calls.Context
Response = rls_pb2.RateLimitResponse


def to_proto(decision: Decision) -> rls_pb2.RateLimitResponse:
    """The wire form of a decision."""
    return Response(
        overall_code=Response.OVER_LIMIT if decision.over_limit else Response.OK,
        statuses=[_status(s) for s in decision.statuses],
        response_headers_to_add=[
            base_pb2.HeaderValue(key=name, value=value) for name, value in decision.headers
        ],
    )


def _status(status: DescriptorStatus) -> rls_pb2.RateLimitResponse.DescriptorStatus:
    msg = Response.DescriptorStatus(code=Response.OVER_LIMIT if status.over_limit else Response.OK)
    if status.rule is not None:
        msg.current_limit.CopyFrom(
            Response.RateLimit(
                name=status.rule.policy,
                requests_per_unit=status.rule.limit,
                unit=Response.RateLimit.Unit.Value(status.rule.unit.name),
            )
        )
        msg.limit_remaining = status.remaining
        msg.duration_until_reset.CopyFrom(duration_pb2.Duration(seconds=status.reset_s))
    return msg


def count(decision: Decision) -> None:
    """Each descriptor's answer in `shop_ratelimit_decisions_total`, by its rule's policy."""
    for status in decision.statuses:
        policy = status.rule.policy if status.rule is not None else "unlimited"
        code = "OVER_LIMIT" if status.over_limit else "OK"
        metrics.RATELIMIT_DECISIONS.labels(policy, code).inc()


class RateLimitServicer:
    """envoy.service.ratelimit.v3.RateLimitService over the RateLimiter."""

    def __init__(self, limiter: RateLimiter, clock: Callable[[], float] = time.time) -> None:
        self._limiter = limiter
        self._clock = clock

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: Context
    ) -> rls_pb2.RateLimitResponse:
        descriptors: list[Descriptor] = [
            tuple((e.key, e.value) for e in d.entries) for d in request.descriptors
        ]
        # Envoy sends 0 when the route sets no hits_addend: it means one hit.
        hits = request.hits_addend or 1
        decision = await self._limiter.check(request.domain, descriptors, hits, self._clock())
        count(decision)
        return to_proto(decision)
