"""The kit's Redis client factory: each option lands in the pool redis-py will use (no network)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, ConnectionPool

from services.kit.redis_client import create_redis

URL = "redis://:s3cret@127.0.0.1:6390/2"


def test_a_plain_client_keeps_redis_py_defaults_and_the_urls_credentials() -> None:
    client = create_redis(URL)
    pool = client.connection_pool
    assert type(pool) is ConnectionPool
    assert pool.connection_kwargs["password"] == "s3cret"
    assert pool.connection_kwargs["db"] == 2
    assert "socket_timeout" not in pool.connection_kwargs
    assert "retry" not in pool.connection_kwargs
    # The client owns its pool, so closing the client closes the connections.
    assert client.auto_close_connection_pool


def test_the_timeout_bounds_connect_and_every_socket_operation() -> None:
    kwargs = create_redis(URL, timeout_s=0.5).connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.5
    assert kwargs["socket_connect_timeout"] == 0.5


def test_a_worker_bounds_only_the_connect_and_sizes_its_pool() -> None:
    pool = create_redis(URL, connect_timeout_s=2.0, max_connections=40).connection_pool
    assert pool.connection_kwargs["socket_connect_timeout"] == 2.0
    assert "socket_timeout" not in pool.connection_kwargs
    assert pool.max_connections == 40


def test_retries_off_means_one_try() -> None:
    retry = create_redis(URL, timeout_s=0.2, retries=False).connection_pool.connection_kwargs[
        "retry"
    ]
    assert retry.get_retries() == 0


def test_a_blocking_pool_waits_for_a_free_connection_as_long_as_the_timeout() -> None:
    pool = create_redis(URL, timeout_s=0.3, max_connections=16, blocking=True).connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    assert pool.max_connections == 16
    assert pool.timeout == 0.3
    assert pool.connection_kwargs["socket_timeout"] == 0.3
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.3
