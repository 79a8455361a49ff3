"""Argon2id hashing with small parameters (the production cost is only slower)."""

from __future__ import annotations

import asyncio

from services.user.config import Argon2Params
from services.user.passwords import PasswordHasher

FAST = Argon2Params(time_cost=1, memory_kib=1024, parallelism=1)
PASSWORD = "correct horse battery"


async def test_the_hash_is_argon2id_with_the_configured_cost_and_a_fresh_salt() -> None:
    hasher = PasswordHasher(FAST)
    first, second = await hasher.hash(PASSWORD), await hasher.hash(PASSWORD)
    assert first.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert first != second
    assert PASSWORD not in first


async def test_verify_tells_the_right_password_from_a_wrong_one() -> None:
    hasher = PasswordHasher(FAST)
    stored = await hasher.hash(PASSWORD)
    assert await hasher.verify(stored, PASSWORD)
    assert not await hasher.verify(stored, PASSWORD + "!")
    assert not await hasher.verify("not a hash", PASSWORD)


async def test_a_hash_made_with_other_parameters_needs_a_rehash() -> None:
    old = await PasswordHasher(FAST).hash(PASSWORD)
    stronger = PasswordHasher(Argon2Params(time_cost=2, memory_kib=2048, parallelism=1))
    assert not PasswordHasher(FAST).needs_rehash(old)
    assert stronger.needs_rehash(old)
    assert await stronger.verify(old, PASSWORD)
    assert stronger.needs_rehash("not a hash")


async def test_hashing_runs_off_the_event_loop() -> None:
    hasher = PasswordHasher(Argon2Params(time_cost=3, memory_kib=8192, parallelism=1))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.gather(*(hasher.hash(PASSWORD) for _ in range(4)))
    ticker.cancel()
    # Hashing on the loop would allow one tick between hashes; in threads it spins on.
    assert ticks > 100


async def test_the_dummy_verification_accepts_nothing_and_raises_nothing() -> None:
    await PasswordHasher(FAST).verify_dummy(PASSWORD)
