"""Composition root of the user service: builds the real dependencies."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from redis.asyncio import Redis
from shop.user.v1 import user_pb2, user_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.cursor import CursorCodec
from services.kit.redis_client import create_redis
from services.kit.server import Registration
from services.user.config import UserConfig
from services.user.passwords import PasswordHasher
from services.user.servicer import UserServicer
from services.user.throttle import LoginThrottle
from services.user.tokens import KeyRing, TokenIssuer
from services.user.usecases import Users

REDIS_TIMEOUT_S = 2.0
SERVICE_NAME = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name


@dataclass(frozen=True)
class UserApp:
    engine: AsyncEngine
    redis: Redis
    users: Users
    registrations: list[Registration]

    async def close(self) -> None:
        await self.engine.dispose()
        await self.redis.aclose()


def bootstrap(
    config: UserConfig,
    *,
    engine: AsyncEngine | None = None,
    redis: Redis | None = None,
    keyring: KeyRing | None = None,
    passwords: PasswordHasher | None = None,
) -> UserApp:
    """Wire the service; pass any dependency to share one (tests), else it is created."""
    if engine is None:
        engine = db.create_engine(config.database_url, pool_size=config.db_pool_size)
    if redis is None:
        # Without a timeout a hung Redis would hang every login with it.
        redis = create_redis(config.redis_url, timeout_s=REDIS_TIMEOUT_S)
    if keyring is None:
        keyring = KeyRing.load(config.signing_keys)
    if passwords is None:
        passwords = PasswordHasher(config.argon2)
    users = Users(
        engine,
        passwords,
        TokenIssuer(keyring, config.jwt_issuer, config.jwt_audience, config.jwt_ttl_s),
        LoginThrottle(
            redis,
            config.login_max_failures,
            config.login_failure_window_s,
            config.login_max_delay_ms / 1000,
        ),
        CursorCodec(config.cursor_secret),
    )
    servicer = UserServicer(users)

    def add_to(server: grpc.aio.Server) -> None:
        user_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    return UserApp(engine, redis, users, [Registration(SERVICE_NAME, add_to)])
