"""Rate-limit rules: which descriptors are limited, how hard, and what the caller is told.

Pure domain: parsing the `RATELIMIT_RULES` string, matching descriptors, the
fixed-window arithmetic and the IETF RateLimit header values. No gRPC, no Redis.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

Entry = tuple[str, str]
Descriptor = tuple[Entry, ...]

_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
_LIMIT = re.compile(r"^(\d+)\s*/\s*([A-Za-z]+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Unit(Enum):
    """A window length; the names are those of Envoy's RateLimit.Unit."""

    SECOND = 1
    MINUTE = 60
    HOUR = 3600

    @property
    def seconds(self) -> int:
        return self.value


# Each unit by its name and its initial: second|s, minute|m, hour|h.
_UNITS = {name: u for u in Unit for name in (u.name.lower(), u.name[0].lower())}


@dataclass(frozen=True)
class Rule:
    """`limit` hits per `unit` for each distinct descriptor matching `pattern`.

    The pattern lists the descriptor's keys in order; a key with a value only
    matches that value, a key without one matches any value (one bucket each).
    """

    pattern: tuple[tuple[str, str | None], ...]
    limit: int
    unit: Unit

    def matches(self, descriptor: Descriptor) -> bool:
        """Exactly these keys in this order, and the fixed values equal."""
        if len(descriptor) != len(self.pattern):
            return False
        return all(
            key == want_key and (want is None or value == want)
            for (key, value), (want_key, want) in zip(descriptor, self.pattern, strict=True)
        )

    @property
    def policy(self) -> str:
        """A header-safe name from the keys and fixed values, e.g. `generic_key-login-remote_address`."""
        parts = [p for key, value in self.pattern for p in (key, value) if p is not None]
        return _UNSAFE.sub("_", "-".join(parts))

    def __str__(self) -> str:
        entries = ",".join(k if v is None else f"{k}:{v}" for k, v in self.pattern)
        return f"{entries}={self.limit}/{self.unit.name.lower()}"


@dataclass(frozen=True)
class Rules:
    """An ordered rule list; the first rule that matches a descriptor applies."""

    rules: tuple[Rule, ...]

    @classmethod
    def parse(cls, text: str) -> Rules:
        """Rules from `entries=N/unit; ...`; ValueError naming the bad rule."""
        rules: list[Rule] = []
        for number, raw in enumerate(text.split(";"), start=1):
            if not raw.strip():
                continue  # tolerate a trailing or doubled `;`
            try:
                rule = _parse_rule(raw)
            except ValueError as exc:
                raise ValueError(f"rate-limit rule {number} {raw.strip()!r}: {exc}") from None
            for earlier in rules:
                if _covers(earlier, rule):
                    # First match wins, so this rule would silently never apply.
                    raise ValueError(
                        f"rate-limit rule {number} {str(rule)!r} can never match: "
                        f"{str(earlier)!r} comes first and matches the same descriptors"
                    )
            rules.append(rule)
        if not rules:
            raise ValueError("no rate-limit rules: expected e.g. 'user=50/second'")
        return cls(tuple(rules))

    def match(self, descriptor: Descriptor) -> Rule | None:
        """The first rule matching the descriptor, or None."""
        return next((r for r in self.rules if r.matches(descriptor)), None)


def _parse_rule(raw: str) -> Rule:
    entries, eq, limit_text = raw.rpartition("=")
    if not eq:
        raise ValueError("expected 'entries=N/unit'")
    pattern = tuple(_parse_entry(e) for e in entries.split(","))
    found = _LIMIT.match(limit_text.strip())
    if found is None:
        raise ValueError(f"limit {limit_text.strip()!r} is not 'N/unit'")
    unit = _UNITS.get(found.group(2).lower())
    if unit is None:
        raise ValueError(f"unit {found.group(2)!r} is not one of second|minute|hour (s|m|h)")
    limit = int(found.group(1))
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return Rule(pattern, limit, unit)


def _parse_entry(raw: str) -> tuple[str, str | None]:
    key, colon, value = (part.strip() for part in raw.partition(":"))
    if not _KEY.match(key):
        raise ValueError(f"descriptor key {key!r} must be letters, digits, '_', '.' or '-'")
    if colon and not value:
        raise ValueError(f"descriptor key {key!r} has ':' but no value")
    return key, value if colon else None


def _covers(first: Rule, later: Rule) -> bool:
    """Whether every descriptor `later` matches is already taken by `first`."""
    if len(first.pattern) != len(later.pattern):
        return False
    return all(
        k1 == k2 and (v1 is None or v1 == v2)
        for (k1, v1), (k2, v2) in zip(first.pattern, later.pattern, strict=True)
    )


def window(now: float, unit: Unit) -> tuple[int, int]:
    """The epoch-aligned fixed window holding `now`: its start and whole seconds until it ends (>= 1)."""
    size = unit.seconds
    start = math.floor(now / size) * size
    return start, max(1, math.ceil(start + size - now))


def policy_header(rule: Rule) -> str:
    """`RateLimit-Policy` value: the quota and window of the rule."""
    return f'"{rule.policy}";q={rule.limit};w={rule.unit.seconds}'


def ratelimit_header(rule: Rule, remaining: int, reset_s: int) -> str:
    """`RateLimit` value: what is left of the quota and when it resets."""
    return f'"{rule.policy}";r={max(0, remaining)};t={reset_s}'


def retry_after(reset_s: int) -> str:
    """`Retry-After` value in whole seconds, never 0 (0 would invite an immediate retry)."""
    return str(max(1, reset_s))
