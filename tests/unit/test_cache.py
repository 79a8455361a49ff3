"""The read-through cache: fresh hits, single-flight loads, stale-if-error, invalidation, LRU."""

from __future__ import annotations

import asyncio
import math
import random
import sys
import threading
from collections.abc import Awaitable, Callable

import pytest

from services.kit.cache import Cached, CacheStats, TtlCache


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """A load that counts its calls and answers v1, v2, ...; it can be held or made to fail."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None
        self.calls = 0
        self.cancelled = False
        self.started = asyncio.Event()
        self.finished = asyncio.Event()

    def hold(self) -> asyncio.Event:
        """Hold the next calls at a new gate; `started` tells when the next one begins."""
        self.gate = asyncio.Event()
        self.started.clear()
        return self.gate

    async def __call__(self) -> str:
        self.calls += 1
        call, gate, error = self.calls, self.gate, self.error
        self.started.set()
        try:
            if gate is not None:
                await gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.finished.set()
        if error is not None:
            raise error
        return f"v{call}"


def cache_of(clock: FakeClock, *, max_entries: int = 100) -> TtlCache[str, str]:
    return TtlCache(ttl=10, stale_ttl=30, max_entries=max_entries, clock=clock)


async def test_a_fresh_entry_is_served_without_calling_load() -> None:
    clock, loader = FakeClock(), Loader()
    cache = cache_of(clock)
    assert await cache.get("k", loader) == Cached("v1", stale=False, age=0.0)
    clock.now += 9.5
    assert await cache.get("k", loader) == Cached("v1", stale=False, age=9.5)
    assert loader.calls == 1
    assert cache.stats == CacheStats(hits=1, misses=1, loads=1, stale_served=0, load_errors=0)


async def test_an_expired_entry_is_loaded_again() -> None:
    clock, loader = FakeClock(), Loader()
    cache = cache_of(clock)
    await cache.get("k", loader)
    clock.now += 10
    assert await cache.get("k", loader) == Cached("v2", stale=False, age=0.0)
    assert loader.calls == 2


async def test_fifty_concurrent_gets_of_a_missing_key_call_load_once() -> None:
    loader = Loader()
    gate = loader.hold()
    cache = cache_of(FakeClock())
    waiting = [asyncio.create_task(cache.get("k", loader)) for _ in range(50)]
    await loader.started.wait()
    gate.set()
    results = await asyncio.gather(*waiting)
    assert loader.calls == 1
    assert {result.value for result in results} == {"v1"}
    assert cache.stats.loads == 1
    assert cache.stats.misses == 50


async def test_different_keys_load_at_the_same_time() -> None:
    started: list[str] = []
    both_started = asyncio.Event()

    def loader_of(key: str) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            started.append(key)
            if len(started) == 2:
                both_started.set()
            # Loads run one after the other would never see the second start.
            async with asyncio.timeout(2):
                await both_started.wait()
            return key.upper()

        return load

    cache = cache_of(FakeClock())
    a, b = await asyncio.gather(cache.get("a", loader_of("a")), cache.get("b", loader_of("b")))
    assert (a.value, b.value) == ("A", "B")


async def test_a_load_error_reaches_every_waiter_and_is_not_cached() -> None:
    loader = Loader()
    gate = loader.hold()
    loader.error = ConnectionError("ERP down")
    cache = cache_of(FakeClock())
    waiting = [asyncio.create_task(cache.get("k", loader)) for _ in range(10)]
    await loader.started.wait()
    gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(result is loader.error for result in results)
    assert loader.calls == 1
    assert len(cache) == 0
    assert cache.stats.load_errors == 1

    loader.error = None
    assert (await cache.get("k", loader)).value == "v2"
    assert loader.calls == 2


async def test_a_failed_load_serves_the_old_value_as_stale_inside_the_stale_window() -> None:
    clock, loader = FakeClock(), Loader()
    cache = cache_of(clock)
    await cache.get("k", loader)
    clock.now += 25
    gate, loader.error = loader.hold(), ConnectionError("ERP down")
    waiting = [
        asyncio.create_task(cache.get("k", loader, stale_on=(TimeoutError, ConnectionError)))
        for _ in range(5)
    ]
    await loader.started.wait()
    gate.set()
    assert await asyncio.gather(*waiting) == [Cached("v1", stale=True, age=25.0)] * 5
    assert loader.calls == 2
    assert cache.stats.stale_served == 5
    # The stale answer is not a refresh: the next get tries the upstream again.
    loader.gate, loader.error = None, None
    assert await cache.get("k", loader) == Cached("v3", stale=False, age=0.0)


async def test_an_error_not_named_in_stale_on_propagates() -> None:
    clock, loader = FakeClock(), Loader()
    cache = cache_of(clock)
    await cache.get("k", loader)
    clock.now += 15
    loader.error = ValueError("bad payload")
    with pytest.raises(ValueError, match="bad payload"):
        await cache.get("k", loader, stale_on=(ConnectionError,))
    assert cache.stats.stale_served == 0


async def test_nothing_older_than_ttl_plus_stale_ttl_is_served() -> None:
    clock, loader = FakeClock(), Loader()
    cache = cache_of(clock)
    await cache.get("k", loader)
    clock.now += 40
    loader.error = ConnectionError("ERP down")
    with pytest.raises(ConnectionError):
        await cache.get("k", loader, stale_on=(ConnectionError,))
    assert cache.stats.stale_served == 0


async def test_a_value_that_ages_out_of_the_stale_window_during_the_load_is_not_served() -> None:
    clock, loader = FakeClock(), Loader()
    cache = cache_of(clock)
    await cache.get("k", loader)
    clock.now += 35
    gate, loader.error = loader.hold(), ConnectionError("ERP down")
    waiting = asyncio.create_task(cache.get("k", loader, stale_on=(ConnectionError,)))
    await loader.started.wait()
    clock.now += 5
    gate.set()
    with pytest.raises(ConnectionError):
        await waiting
    assert cache.stats.stale_served == 0


async def test_a_load_under_way_at_an_invalidation_is_not_stored() -> None:
    loader = Loader()
    cache = cache_of(FakeClock())
    first_gate = loader.hold()
    before = asyncio.create_task(cache.get("k", loader))
    await loader.started.wait()
    cache.invalidate("k")

    second_gate = loader.hold()
    after = asyncio.create_task(cache.get("k", loader))
    # Joining the old load instead would never start this one.
    async with asyncio.timeout(2):
        await loader.started.wait()
    assert loader.calls == 2

    first_gate.set()
    assert (await before).value == "v1"
    assert len(cache) == 0, "the pre-invalidation value was stored"
    # The old load finishing must not retire the new one: a third get still joins it.
    joining = asyncio.create_task(cache.get("k", loader))
    await asyncio.sleep(0)
    second_gate.set()
    assert [(await after).value, (await joining).value] == ["v2", "v2"]
    assert loader.calls == 2
    assert (await cache.get("k", loader)).value == "v2"
    assert loader.calls == 2


async def test_invalidate_where_drops_matching_keys_and_their_loads_under_way() -> None:
    loader, gated = Loader(), Loader()
    gate = gated.hold()
    cache: TtlCache[tuple[str, str], str] = TtlCache(ttl=10, stale_ttl=0, max_entries=10)
    for key in [("t1", "a"), ("t1", "b"), ("t2", "a")]:
        await cache.get(key, loader)
    under_way = asyncio.create_task(cache.get(("t1", "c"), gated))
    await gated.started.wait()

    assert cache.invalidate_where(lambda key: key[0] == "t1") == 2
    assert len(cache) == 1
    gate.set()
    assert (await under_way).value == "v1"
    assert len(cache) == 1
    await cache.get(("t2", "a"), loader)
    await cache.get(("t1", "a"), loader)
    assert loader.calls == 4, "t2 stays cached, t1 loads again"


async def test_clear_drops_every_entry_and_every_load_under_way() -> None:
    loader, gated = Loader(), Loader()
    gate = gated.hold()
    cache = cache_of(FakeClock())
    await cache.get("a", loader)
    await cache.get("b", loader)
    under_way = asyncio.create_task(cache.get("c", gated))
    await gated.started.wait()
    cache.clear()
    assert len(cache) == 0
    gate.set()
    await under_way
    assert len(cache) == 0
    await cache.get("a", loader)
    assert loader.calls == 3


async def test_the_least_recently_used_entry_is_evicted() -> None:
    loader = Loader()
    cache = cache_of(FakeClock(), max_entries=2)
    await cache.get("a", loader)
    await cache.get("b", loader)
    await cache.get("a", loader)
    await cache.get("c", loader)
    assert len(cache) == 2
    assert loader.calls == 3
    assert (await cache.get("a", loader)).value == "v1"
    assert loader.calls == 3, "a was used recently and stays"
    assert (await cache.get("b", loader)).value == "v4"


async def test_cancelling_one_waiter_leaves_the_others_their_value() -> None:
    loader = Loader()
    gate = loader.hold()
    cache = cache_of(FakeClock())
    waiting = [asyncio.create_task(cache.get("k", loader)) for _ in range(3)]
    await loader.started.wait()
    waiting[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]
    gate.set()
    assert [(await waiting[0]).value, (await waiting[2]).value] == ["v1", "v1"]
    assert loader.calls == 1
    assert not loader.cancelled


async def test_cancelling_the_first_caller_does_not_cancel_the_load() -> None:
    loader = Loader()
    gate = loader.hold()
    cache = cache_of(FakeClock())
    first = asyncio.create_task(cache.get("k", loader))
    await loader.started.wait()
    others = [asyncio.create_task(cache.get("k", loader)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert [result.value for result in await asyncio.gather(*others)] == ["v1"] * 3
    assert not loader.cancelled
    assert loader.calls == 1


async def test_a_load_whose_callers_all_left_still_fills_the_cache() -> None:
    loader = Loader()
    gate = loader.hold()
    cache = cache_of(FakeClock())
    first = asyncio.create_task(cache.get("k", loader))
    await loader.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    await loader.finished.wait()
    assert (await cache.get("k", loader)).value == "v1"
    assert loader.calls == 1


async def test_a_failed_load_whose_callers_all_left_does_not_leave_the_key_stuck() -> None:
    loader = Loader()
    gate = loader.hold()
    loader.error = ConnectionError("ERP down")
    cache = cache_of(FakeClock())
    first = asyncio.create_task(cache.get("k", loader))
    await loader.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    await loader.finished.wait()

    loader.gate, loader.error = None, None
    async with asyncio.timeout(2):
        assert (await cache.get("k", loader)).value == "v2"
    assert cache.stats.load_errors == 1


def test_single_flight_is_per_event_loop() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=60, stale_ttl=0, max_entries=10)
    # Both loads must be under way at once, or the second loop would just hit the cache.
    both_loading = threading.Barrier(2, timeout=5)
    loaders: list[int] = []

    async def load() -> str:
        loaders.append(threading.get_ident())
        await asyncio.to_thread(both_loading.wait)
        return "v"

    async def twenty_gets() -> list[str]:
        return [
            got.value for got in await asyncio.gather(*(cache.get("k", load) for _ in range(20)))
        ]

    results: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(asyncio.run(twenty_gets())), daemon=True)
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [["v"] * 20] * 2
    assert len(set(loaders)) == 2, "one load on each loop"
    assert cache.stats.loads == 2


def test_two_threads_with_their_own_loops_share_the_map_without_corrupting_it() -> None:
    cache: TtlCache[int, int] = TtlCache(ttl=60, stale_ttl=0, max_entries=8)
    rounds, batch = 300, 10
    wrong: list[tuple[int, int]] = []
    finished: list[int] = []

    async def hammer(seed: int) -> None:
        rng = random.Random(seed)

        async def get(key: int) -> None:
            async def load() -> int:
                await asyncio.sleep(0)
                return key * 10

            got = await cache.get(key, load)
            if got.value != key * 10:
                wrong.append((key, got.value))

        # A corrupted flight table shows as a load nobody answers: fail, don't hang.
        async with asyncio.timeout(10):
            for n in range(rounds):
                await asyncio.gather(*(get(rng.randrange(20)) for _ in range(batch)))
                cache.invalidate(rng.randrange(20))
                if n % 25 == 0:
                    cache.invalidate_where(lambda key: key % 3 == 0)
        finished.append(seed)

    threads = [
        threading.Thread(target=asyncio.run, args=(hammer(seed),), daemon=True) for seed in (1, 2)
    ]
    # Switching threads as often as possible makes unguarded dict updates interleave.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        sys.setswitchinterval(switch_interval)
    assert sorted(finished) == [1, 2]
    assert wrong == []
    assert len(cache) <= 8
    stats = cache.stats
    assert stats.hits + stats.misses == 2 * rounds * batch
    assert 0 < stats.loads <= stats.misses


@pytest.mark.parametrize(
    ("ttl", "stale_ttl", "max_entries", "message"),
    [
        (0, 0, 1, "ttl"),
        (-1, 0, 1, "ttl"),
        (math.nan, 0, 1, "ttl"),
        (1, -0.5, 1, "stale_ttl"),
        (1, math.nan, 1, "stale_ttl"),
        (1, 0, 0, "max_entries"),
    ],
)
def test_nonsense_settings_are_refused(
    ttl: float, stale_ttl: float, max_entries: int, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message} must be"):
        TtlCache(ttl=ttl, stale_ttl=stale_ttl, max_entries=max_entries)


def test_the_smallest_sensible_settings_are_accepted() -> None:
    assert len(TtlCache(ttl=0.001, stale_ttl=0, max_entries=1)) == 0
