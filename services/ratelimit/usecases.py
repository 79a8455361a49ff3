"""The rate-limit use case: count a request's hits and decide whether it is over a limit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.kit import errors
from services.ratelimit.rules import (
    Descriptor,
    Rule,
    Rules,
    policy_header,
    ratelimit_header,
    retry_after,
    window,
)
from services.ratelimit.store import Bucket, Counters


@dataclass(frozen=True)
class DescriptorStatus:
    """The outcome for one descriptor.

    `rule` is None when no rule matched: the descriptor is not limited and
    `remaining` and `reset_s` mean nothing (0).
    """

    rule: Rule | None
    over_limit: bool
    remaining: int
    reset_s: int


@dataclass(frozen=True)
class Decision:
    """The outcome for a request: over limit if any descriptor is, and the headers to send."""

    over_limit: bool
    statuses: tuple[DescriptorStatus, ...]
    headers: tuple[tuple[str, str], ...]


UNLIMITED = DescriptorStatus(rule=None, over_limit=False, remaining=0, reset_s=0)


class RateLimiter:
    """Fixed-window limits from `rules`, counted in `counters`."""

    def __init__(self, rules: Rules, counters: Counters) -> None:
        self._rules = rules
        self._counters = counters

    async def check(
        self, domain: str, descriptors: Sequence[Descriptor], hits: int, now: float
    ) -> Decision:
        """Add `hits` to every limited descriptor's window and decide at `now` (epoch seconds)."""
        if not domain:
            raise errors.InvalidArgument.field("domain", "must not be empty")
        if hits < 1:
            raise errors.InvalidArgument.field("hits_addend", "must be at least 1")
        matched: list[tuple[int, Rule, int, Bucket]] = []
        for index, descriptor in enumerate(descriptors):
            rule = self._rules.match(descriptor)
            if rule is not None:
                start, reset_s = window(now, rule.unit)
                matched.append((index, rule, reset_s, Bucket(descriptor, start, rule.unit.seconds)))
        # Unlimited requests, the common case for most routes, never reach Redis.
        counts = await self._counters.add(domain, [m[3] for m in matched], hits) if matched else []
        statuses = [UNLIMITED] * len(descriptors)
        for (index, rule, reset_s, _), count in zip(matched, counts, strict=True):
            statuses[index] = DescriptorStatus(
                rule, count > rule.limit, max(0, rule.limit - count), reset_s
            )
        return Decision(
            over_limit=any(s.over_limit for s in statuses),
            statuses=tuple(statuses),
            headers=_headers(statuses),
        )


def _headers(statuses: Sequence[DescriptorStatus]) -> tuple[tuple[str, str], ...]:
    """RateLimit headers for the descriptor that binds: the longest wait, else the least left."""
    limited = [(s.rule, s) for s in statuses if s.rule is not None]
    over = [(rule, s) for rule, s in limited if s.over_limit]
    if over:
        # The request stays refused until every exceeded window has reset.
        rule, status = max(over, key=lambda pair: pair[1].reset_s)
        return (
            ("retry-after", retry_after(status.reset_s)),
            ("ratelimit", ratelimit_header(rule, 0, status.reset_s)),
            ("ratelimit-policy", policy_header(rule)),
        )
    if not limited:
        return ()
    rule, status = min(limited, key=lambda pair: pair[1].remaining)
    return (
        ("ratelimit", ratelimit_header(rule, status.remaining, status.reset_s)),
        ("ratelimit-policy", policy_header(rule)),
    )
