"""Argon2id password hashing, off the event loop."""

from __future__ import annotations

import asyncio
import secrets

import argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError

from services.user.config import Argon2Params


class PasswordHasher:
    """Hashes and verifies passwords with Argon2id at the configured cost.

    Each hash costs tens of milliseconds of CPU and `memory_kib` of memory, so
    it runs in a worker thread (argon2-cffi releases the GIL) and the event
    loop keeps serving other calls meanwhile.
    """

    def __init__(self, params: Argon2Params) -> None:
        self._argon2 = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=Type.ID,
        )
        # A hash of a password nobody knows, so that a login for an unknown
        # user burns the same work as one with a wrong password.
        self._dummy = self._argon2.hash(secrets.token_urlsafe(32))

    async def hash(self, password: str) -> str:
        """The PHC string (`$argon2id$v=19$m=...`) of a password, with a fresh salt."""
        return await asyncio.to_thread(self._argon2.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether the password matches the hash; False for a hash we cannot read."""
        return await asyncio.to_thread(self._verify, password_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend a verification's time and memory, to answer an unknown user like a known one."""
        await asyncio.to_thread(self._verify, self._dummy, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the configured ones."""
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
