"""Committed changes as PostgreSQL notifications: what live views (WatchOrder,
WatchStock) follow.

A writer calls `notify(conn, channel, payload)` inside the transaction that makes
the change; PostgreSQL delivers it to every listener when, and only if, that
transaction commits, in commit order. A payload is small JSON (well under
PostgreSQL's 8,000-byte limit): which entity, and its new version.

A reader subscribes to one entity on a process-wide `Hub`, which holds one
dedicated connection that LISTENs on its channels and fans each notification
out to the subscribers of that entity's key (`KEYS`). A notification only says
"look again": a subscriber re-reads the entity, so nothing is lost when the hub
tells it to re-read without one (`Change.reread`):

- after (re)connecting, since notifications sent while nobody listened are gone;
- when the subscriber fell `queue_size` changes behind: its queue collapses to
  one re-read rather than block the hub or the other subscribers.

Closing the hub ends every subscription (`Subscription.next` returns None), so
long-lived streams finish when a server drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import backoff, db

log = logging.getLogger(__name__)

T = TypeVar("T")

ORDER_STATUS = "order_status"
STOCK_LEVEL = "stock_level"
# How the hub's connection shows in pg_stat_activity.
APPLICATION_NAME = "shop-change-hub"
# The payload fields that name the entity a notification is about.
KEYS: dict[str, tuple[str, ...]] = {
    ORDER_STATUS: ("tenant", "id"),
    STOCK_LEVEL: ("tenant", "product_id"),
}


async def notify(conn: AsyncConnection, channel: str, payload: Mapping[str, Any]) -> None:
    """Queue one notification on `channel`, sent when the caller's transaction commits."""
    sent = notification(channel, payload)
    await conn.execute(sa.select(sa.func.pg_notify(sent.channel, sent.payload)))


def notification(channel: str, payload: Mapping[str, Any]) -> db.Notify:
    """The notification `notify` sends (`db.write_together` sends it after its rows)."""
    return db.Notify(channel, json.dumps(payload, separators=(",", ":")))


@dataclass(frozen=True)
class Change:
    """One wake-up of a subscriber: a committed change, or (payload None) a re-read."""

    payload: Mapping[str, Any] | None

    @property
    def reread(self) -> bool:
        """Changes may have been missed: read the entity again whatever its version."""
        return self.payload is None


REREAD = Change(None)


@dataclass(frozen=True)
class HubSettings:
    """How big a subscriber's queue is and how the hub keeps its connection."""

    queue_size: int = 16
    # Between health checks of a quiet connection (a dead peer sends no FIN).
    ping_interval_s: float = 10.0
    ping_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    retry_base_s: float = 0.2
    retry_cap_s: float = 10.0


class Subscription:
    """One subscriber's queue of changes to one entity."""

    def __init__(self, channel: str, key: tuple[str, ...], size: int) -> None:
        self.channel = channel
        self.key = key
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue(size)
        self._closed = False

    def _offer(self, change: Change) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            # Too far behind: one re-read stands for everything it has not taken yet.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(REREAD)

    def _close(self) -> None:
        if self._closed:
            return
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        self._closed = True

    async def next(self) -> Change | None:
        """The next change; None once the hub is closed (wrap in asyncio.timeout for quiet)."""
        change = await self._queue.get()
        if change is None:
            self._queue.put_nowait(None)  # closed stays closed for every later call
        return change


class Hub:
    """One LISTEN connection per process, fanned out to in-process subscribers.

    The connection opens with the first subscription (a process nobody watches
    holds none) and reopens with backoff whenever it drops.
    """

    def __init__(
        self, url: str, channels: Sequence[str], settings: HubSettings | None = None
    ) -> None:
        unknown = set(channels) - set(KEYS)
        if unknown:
            raise ValueError(f"no key is known for the channels {sorted(unknown)}")
        self._url = db.libpq_url(url)
        self._channels = tuple(channels)
        self._settings = settings or HubSettings()
        self._subscribers: dict[str, dict[tuple[str, ...], set[Subscription]]] = {
            c: {} for c in self._channels
        }
        self._closing = asyncio.Event()
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self.connects = 0  # how many times the connection was (re)opened

    @contextlib.contextmanager
    def subscribe(self, channel: str, *key: str) -> Iterator[Subscription]:
        """Changes to the entity `key` (the values of `KEYS[channel]`) while in the block."""
        if channel not in self._subscribers:
            raise ValueError(f"the hub does not listen on {channel}")
        subscription = Subscription(channel, key, self._settings.queue_size)
        if self._closing.is_set():
            subscription._close()
            yield subscription
            return
        self._start()
        self._subscribers[channel].setdefault(key, set()).add(subscription)
        try:
            yield subscription
        finally:
            found = self._subscribers[channel].get(key)
            if found is not None:
                found.discard(subscription)
                if not found:
                    del self._subscribers[channel][key]

    async def listening(self) -> None:
        """Wait until the connection listens (tests; subscribers never need to)."""
        self._start()
        await self._listening.wait()

    async def close(self) -> None:
        """End every subscription and drop the connection; subscribing after gets closed ones."""
        self._closing.set()
        for by_key in self._subscribers.values():
            for subscriptions in by_key.values():
                for subscription in subscriptions:
                    subscription._close()
        if self._task is not None:
            await self._task

    def _start(self) -> None:
        if self._task is None and not self._closing.is_set():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _all(self) -> Iterator[Subscription]:
        for by_key in self._subscribers.values():
            for subscriptions in by_key.values():
                yield from list(subscriptions)

    def _received(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
            key = tuple(str(data[field]) for field in KEYS[channel])
        except (ValueError, KeyError, TypeError):
            log.warning("change notification without its key", extra={"channel": channel})
            return
        for subscription in list(self._subscribers.get(channel, {}).get(key, ())):
            subscription._offer(Change(data))

    async def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            try:
                conn = await asyncpg.connect(
                    self._url,
                    timeout=self._settings.connect_timeout_s,
                    server_settings={"application_name": APPLICATION_NAME},
                )
            except Exception as exc:  # any failure to connect is retried the same way
                log.warning("change listener cannot connect", extra={"error": type(exc).__name__})
                wait = backoff.full_jitter(
                    self._rng,
                    attempt,
                    base_s=self._settings.retry_base_s,
                    cap_s=self._settings.retry_cap_s,
                )
                attempt += 1
                await backoff.pause(self._closing, wait)
                continue
            attempt = 0
            try:
                await self._listen(conn)
            except Exception as exc:
                log.warning("change listener lost", extra={"error": type(exc).__name__})
            finally:
                self._listening.clear()
                await _close_quietly(conn)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        for channel in self._channels:
            await conn.add_listener(channel, self._received)
        self.connects += 1
        self._listening.set()
        # Whatever committed while nobody listened was told to no one.
        for subscription in self._all():
            subscription._offer(REREAD)
        while not self._closing.is_set() and not lost.is_set():
            waits = [
                asyncio.ensure_future(self._closing.wait()),
                asyncio.ensure_future(lost.wait()),
            ]
            try:
                done, _ = await asyncio.wait(
                    waits,
                    timeout=self._settings.ping_interval_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
            if not done:
                await conn.fetchval("SELECT 1", timeout=self._settings.ping_timeout_s)


async def _close_quietly(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2)
    except Exception:
        conn.terminate()


async def follow(
    hub: Hub,
    channel: str,
    key: Sequence[str],
    read: Callable[[], Awaitable[T]],
    version: Callable[[T], int],
    *,
    heartbeat_s: float,
    final: Callable[[T], bool] = lambda _value: False,
) -> AsyncIterator[tuple[T, bool]]:
    """An entity now and after every committed change: (value, repeat) pairs.

    Subscribes before the first read, so no change falls between the two. A change
    is read again and given when its version grew; after `heartbeat_s` s of quiet the
    entity is read and given again with `repeat` True when unchanged (a live stream's
    keep-alive, and a check nothing was missed). Ends after a `final` value and when
    the hub closes. Errors of the first `read` come before anything is given.
    """
    with hub.subscribe(channel, *key) as subscription:
        current = await read()
        yield current, False
        while not final(current):
            try:
                async with asyncio.timeout(heartbeat_s):
                    change = await subscription.next()
            except TimeoutError:
                latest = await read()
                repeat, current = version(latest) <= version(current), latest
                yield current, repeat
                continue
            if change is None:
                return
            told = None if change.payload is None else change.payload.get("version")
            if isinstance(told, int) and told <= version(current):
                continue  # given already
            latest = await read()
            if version(latest) > version(current):
                current = latest
                yield current, False
