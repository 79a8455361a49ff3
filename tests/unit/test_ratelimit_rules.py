"""Rate-limit rules: parsed from one string, matched in order, fixed windows, IETF header values."""

from __future__ import annotations

import pytest

from services.kit.config import ConfigError
from services.ratelimit.config import RateLimitConfig
from services.ratelimit.rules import (
    Rule,
    Rules,
    Unit,
    policy_header,
    ratelimit_header,
    retry_after,
    window,
)

EXAMPLE = "user=20/second; remote_address=100/second; generic_key:login,remote_address=10/minute"


def test_the_example_config_parses_into_ordered_rules() -> None:
    rules = Rules.parse(EXAMPLE)
    assert rules.rules == (
        Rule((("user", None),), 20, Unit.SECOND),
        Rule((("remote_address", None),), 100, Unit.SECOND),
        Rule((("generic_key", "login"), ("remote_address", None)), 10, Unit.MINUTE),
    )


def test_whitespace_short_units_and_trailing_separators_are_tolerated() -> None:
    rules = Rules.parse("  user = 5 / s ;\n generic_key : login , ip=3/M;; x=1/h ; ")
    assert [(str(r), r.unit) for r in rules.rules] == [
        ("user=5/second", Unit.SECOND),
        ("generic_key:login,ip=3/minute", Unit.MINUTE),
        ("x=1/hour", Unit.HOUR),
    ]


def test_a_fixed_value_may_contain_colons() -> None:
    (rule,) = Rules.parse("remote_address:::1=5/minute").rules
    assert rule.pattern == (("remote_address", "::1"),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no rate-limit rules"),
        (" ; ", "no rate-limit rules"),
        ("user", r"rule 1 'user': expected 'entries=N/unit'"),
        ("user=10", r"limit '10' is not 'N/unit'"),
        ("user=ten/second", r"limit 'ten/second' is not 'N/unit'"),
        ("user=-1/second", r"limit '-1/second' is not 'N/unit'"),
        ("user=0/second", "limit must be at least 1"),
        ("user=10/day", r"unit 'day' is not one of second\|minute\|hour"),
        ("user=1/s; =10/second", r"rule 2 '=10/second': descriptor key ''"),
        ("us er=10/second", r"descriptor key 'us er' must be"),
        ("generic_key:,user=1/s", r"descriptor key 'generic_key' has ':' but no value"),
        ("user,=1/s", r"descriptor key ''"),
    ],
)
def test_bad_rules_are_refused_naming_the_rule_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rules.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "user=10/second; user=5/minute",
        "generic_key,remote_address=5/minute; generic_key:login,remote_address=1/minute",
    ],
)
def test_a_rule_hidden_behind_an_earlier_broader_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"rule 2 .* can never match: .* comes first"):
        Rules.parse(text)


def test_a_specific_rule_before_a_broader_one_is_fine() -> None:
    rules = Rules.parse("generic_key:login,ip=1/minute; generic_key,ip=5/minute")
    assert rules.match((("generic_key", "login"), ("ip", "a"))) is rules.rules[0]
    assert rules.match((("generic_key", "search"), ("ip", "a"))) is rules.rules[1]


def test_a_descriptor_matches_only_with_exactly_the_rule_keys_in_order() -> None:
    rules = Rules.parse(EXAMPLE)
    login = rules.rules[2]
    assert rules.match((("user", "u-1"),)) is rules.rules[0]
    assert rules.match((("remote_address", "10.0.0.1"),)) is rules.rules[1]
    assert rules.match((("generic_key", "login"), ("remote_address", "10.0.0.1"))) is login
    # Wrong order, extra or missing entries, or another fixed value: no rule applies.
    assert rules.match((("remote_address", "10.0.0.1"), ("generic_key", "login"))) is None
    assert rules.match((("user", "u-1"), ("remote_address", "10.0.0.1"))) is None
    assert rules.match((("generic_key", "login"),)) is None
    assert rules.match((("generic_key", "search"), ("remote_address", "10.0.0.1"))) is None
    assert rules.match((("tenant", "t-1"),)) is None
    assert rules.match(()) is None


def test_the_first_matching_rule_wins() -> None:
    rules = Rules.parse("user:admin=1000/second; user=5/second")
    assert rules.match((("user", "admin"),)) is rules.rules[0]
    assert rules.match((("user", "bob"),)) is rules.rules[1]


@pytest.mark.parametrize(
    ("now", "unit", "expected"),
    [
        (1_700_000_000.0, Unit.SECOND, (1_700_000_000, 1)),
        (1_700_000_000.999, Unit.SECOND, (1_700_000_000, 1)),
        (1_700_000_040.0, Unit.MINUTE, (1_700_000_040, 60)),
        (1_700_000_010.5, Unit.MINUTE, (1_699_999_980, 30)),
        (1_700_000_039.2, Unit.MINUTE, (1_699_999_980, 1)),
        (3600 * 10 + 59.0, Unit.HOUR, (36_000, 3541)),
    ],
)
def test_windows_are_fixed_and_aligned_to_the_epoch(
    now: float, unit: Unit, expected: tuple[int, int]
) -> None:
    start, reset_s = window(now, unit)
    assert (start, reset_s) == expected
    assert start % unit.seconds == 0
    assert 1 <= reset_s <= unit.seconds


def test_policy_names_come_from_the_keys_and_fixed_values_in_header_safe_characters() -> None:
    rules = Rules.parse('user=1/s; generic_key:login,remote_address=1/m; ip:::1=1/h; k:a b"=1/s')
    assert [r.policy for r in rules.rules] == [
        "user",
        "generic_key-login-remote_address",
        "ip-__1",
        "k-a_b_",
    ]


def test_header_values_follow_the_ietf_ratelimit_structured_fields() -> None:
    (rule,) = Rules.parse("generic_key:login,remote_address=10/minute").rules
    assert policy_header(rule) == '"generic_key-login-remote_address";q=10;w=60'
    assert ratelimit_header(rule, 7, 42) == '"generic_key-login-remote_address";r=7;t=42'
    assert ratelimit_header(rule, -3, 42).endswith(";r=0;t=42")


@pytest.mark.parametrize(("reset_s", "expected"), [(0, "1"), (1, "1"), (59, "59")])
def test_retry_after_is_whole_seconds_and_at_least_one(reset_s: int, expected: str) -> None:
    assert retry_after(reset_s) == expected


def test_config_defaults_and_overrides() -> None:
    env = {"REDIS_URL": "redis://h:1/0"}
    config = RateLimitConfig.from_env(env)
    assert [str(r) for r in config.rules.rules] == [
        "generic_key:login,remote_address=20/minute",
        "generic_key:register,remote_address=10/minute",
    ]
    assert (config.server.bind, config.redis_url) == ("127.0.0.1:50051", "redis://h:1/0")
    custom = RateLimitConfig.from_env(
        {**env, "RATELIMIT_GRPC_BIND": "0.0.0.0:8081", "RATELIMIT_RULES": "user=1/h"}
    )
    assert (custom.server.bind, [str(r) for r in custom.rules.rules]) == (
        "0.0.0.0:8081",
        ["user=1/hour"],
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "REDIS_URL must be set"),
        ({"REDIS_URL": "redis://h/0", "RATELIMIT_RULES": "user=1/day"}, "RATELIMIT_RULES: .*day"),
        ({"REDIS_URL": "redis://h/0", "RATELIMIT_REDIS_TIMEOUT_S": "x"}, "must be float"),
    ],
)
def test_bad_config_is_refused_at_startup_naming_the_setting(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        RateLimitConfig.from_env(env)
