"""The login throttle's arithmetic and the client address it keys on, without a server."""

from __future__ import annotations

from redis.asyncio import Redis

from services.kit.peer import from_peer
from services.user.throttle import LoginThrottle


def test_an_accounts_failures_slow_it_down_doubling_up_to_the_cap() -> None:
    throttle = LoginThrottle(Redis(), max_failures=5, window_s=900, max_delay_s=2.0)
    assert [throttle.delay(n) for n in range(0, 10)] == [
        0, 0, 0, 0, 0, 0.25, 0.5, 1.0, 2.0, 2.0
    ]  # fmt: skip
    assert throttle.delay(10_000) == 2.0


def test_the_pair_and_the_account_have_their_own_keys() -> None:
    throttle = LoginThrottle(Redis(), max_failures=5, window_s=900)
    at_home, elsewhere = (
        throttle.keys("t", "acct", "10.0.0.1"),
        throttle.keys("t", "acct", "10.0.0.2"),
    )
    assert at_home[0] != elsewhere[0]  # one address's lock-out is not another's
    assert at_home[1] == elsewhere[1]  # but the account's count is shared
    assert "acct" not in at_home[0]
    assert "10.0.0.1" not in at_home[0]


def test_a_grpc_peer_names_its_ip_address() -> None:
    assert from_peer("ipv4:127.0.0.1:50123") == "127.0.0.1"
    assert from_peer("ipv6:[::1]:50123") == "::1"
    assert from_peer("unix:/tmp/s") == "unix:/tmp/s"
