"""A read-through TTL cache with single-flight loads and stale-if-error.

An entry is fresh for `ttl` seconds after its load and is served without
calling `load`; after that a get loads again. If that load fails with one of
the caller's `stale_on` errors, an entry younger than `ttl + stale_ttl` is
served marked stale instead; an older entry is never served.

Single-flight: concurrent gets of one key on one event loop share one load,
which runs in its own task, so no caller's cancellation cancels it for the
others. Its value or its error reaches every waiter; errors are not cached.

Invalidation generations: `invalidate`, `invalidate_where` and `clear` bump
the generation of the keys being loaded. A load begun before the invalidation
(it may have read the data from before the write) still answers its waiters
but is not stored, and gets after the invalidation start a new load.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

from services.kit import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class Cached(Generic[V]):
    """A cached value; `stale` when served after a failed load, `age` in seconds since its load."""

    value: V
    stale: bool
    age: float


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was built.

    hits: gets answered by a fresh entry; misses: gets that waited for a load
    (started or joined); loads: calls to `load`; stale_served: stale answers
    after a failed load; load_errors: loads that raised.
    """

    hits: int
    misses: int
    loads: int
    stale_served: int
    load_errors: int


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    loaded_at: float


@dataclass(frozen=True)
class _Flight(Generic[V]):
    result: asyncio.Future[_Entry[V]]
    generation: int


@dataclass
class _Loading(Generic[V]):
    """The loads under way for one key, on any event loop."""

    generation: int = 0
    running: int = 0
    # Only the newest flight of each loop can be joined; one left behind by an
    # invalidation still runs to answer its own waiters.
    flights: dict[asyncio.AbstractEventLoop, _Flight[V]] = field(default_factory=dict)


def _mark_retrieved(result: asyncio.Future[Any]) -> None:
    # If every waiter was cancelled nobody reads the error; it is not the loop's to log.
    if not result.cancelled():
        result.exception()


class TtlCache(Generic[K, V]):
    """A bounded LRU map of loaded values with a fresh and a stale window.

    The map is guarded by a threading.Lock held only for dict operations, so
    one cache is safe to share across threads. Single-flight is per event loop
    (asyncio futures belong to one loop): gets on two loops may each load a key.
    A load runs in its own task: cancelling any caller, the first one included,
    only stops that caller waiting; the load finishes for the others and is
    stored even when no caller is left. A load that never returns keeps its key
    in flight on that loop, so loads must carry their own deadlines.
    """

    def __init__(
        self,
        *,
        ttl: float,
        stale_ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        name: str = "cache",
    ) -> None:
        # Written as `not x > 0` so NaN, which fails every comparison, is refused too.
        if not ttl > 0:
            raise ValueError("ttl must be > 0")
        if not stale_ttl >= 0:
            raise ValueError("stale_ttl must be >= 0")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._ttl = ttl
        # `shop_cache_lookups_total{cache=name}` (services.kit.metrics).
        self._lookups = {
            result: metrics.CACHE_LOOKUPS.labels(name, result)
            for result in ("hit", "miss", "stale")
        }
        self._max_age = ttl + stale_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._loading: dict[K, _Loading[V]] = {}
        # The loop keeps only weak references to tasks; this keeps loads nobody awaits alive.
        # set.add and set.discard are atomic, so no lock.
        self._tasks: set[asyncio.Task[None]] = set()
        self._counts: Counter[str] = Counter()

    def __len__(self) -> int:
        """How many entries are held, stale ones included."""
        with self._lock:
            return len(self._entries)

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            return CacheStats(*(self._counts[counter.name] for counter in fields(CacheStats)))

    async def get(
        self,
        key: K,
        load: Callable[[], Awaitable[V]],
        *,
        stale_on: tuple[type[BaseException], ...] = (),
    ) -> Cached[V]:
        """The value of `key`: a fresh entry, else the result of one load shared by all callers."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                age = self._clock() - entry.loaded_at
                if age < self._ttl:
                    self._entries.move_to_end(key)
                    self._counts["hits"] += 1
                    self._lookups["hit"].inc()
                    return Cached(entry.value, stale=False, age=age)
                if age >= self._max_age:
                    del self._entries[key]
            self._counts["misses"] += 1
            self._lookups["miss"].inc()
            loading = self._loading.setdefault(key, _Loading())
            flight = loading.flights.get(loop)
            leader = False
            if flight is None or flight.generation != loading.generation:
                flight = _Flight(loop.create_future(), loading.generation)
                loading.flights[loop] = flight
                loading.running += 1
                self._counts["loads"] += 1
                leader = True
        if leader:
            # Outside the lock: an eager task factory would run the load, and _land, right here.
            flight.result.add_done_callback(_mark_retrieved)
            task = loop.create_task(self._load(key, load, flight))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            # shield: a cancelled caller stops waiting; the shared result carries on.
            loaded = await asyncio.shield(flight.result)
        except Exception as error:
            if isinstance(error, stale_on) and (stale := self._stale(key)) is not None:
                return stale
            raise
        return Cached(loaded.value, stale=False, age=self._clock() - loaded.loaded_at)

    def invalidate(self, key: K) -> None:
        """Drop `key`; a load of it already under way will not be stored."""
        with self._lock:
            self._entries.pop(key, None)
            if (loading := self._loading.get(key)) is not None:
                loading.generation += 1

    def invalidate_where(self, predicate: Callable[[K], bool]) -> int:
        """Drop the keys `predicate` accepts (called under the lock); returns how many entries."""
        with self._lock:
            doomed = [key for key in self._entries if predicate(key)]
            for key in doomed:
                del self._entries[key]
            for key, loading in self._loading.items():
                if predicate(key):
                    loading.generation += 1
            return len(doomed)

    def clear(self) -> None:
        """Drop every entry; no load already under way will be stored."""
        with self._lock:
            self._entries.clear()
            for loading in self._loading.values():
                loading.generation += 1

    async def _load(self, key: K, load: Callable[[], Awaitable[V]], flight: _Flight[V]) -> None:
        """Run one load, store it unless invalidated meanwhile, then answer its waiters."""
        try:
            value = await load()
        except Exception as error:
            self._land(key, flight, None, failed=True)
            flight.result.set_exception(error)
            return
        except BaseException:
            # The loop is shutting down (or the process exiting): free the key, release the waiters.
            self._land(key, flight, None)
            flight.result.cancel()
            raise
        entry = _Entry(value, self._clock())
        self._land(key, flight, entry)
        flight.result.set_result(entry)

    def _land(
        self, key: K, flight: _Flight[V], entry: _Entry[V] | None, *, failed: bool = False
    ) -> None:
        """Store a finished load if its generation is current, and retire its flight."""
        with self._lock:
            loading = self._loading[key]
            self._counts["load_errors"] += failed
            if entry is not None and flight.generation == loading.generation:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            loop = flight.result.get_loop()
            if loading.flights.get(loop) is flight:
                del loading.flights[loop]
            loading.running -= 1
            if not loading.running:
                del self._loading[key]

    def _stale(self, key: K) -> Cached[V] | None:
        """The entry of `key` marked stale, if it is still inside the stale window."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            age = self._clock() - entry.loaded_at
            if age >= self._max_age:
                return None
            self._counts["stale_served"] += 1
            self._lookups["stale"].inc()
            return Cached(entry.value, stale=True, age=age)
