"""Routing by message type: one worker, one queue, a handler per `Message.type`.

    router = Router()
    router.route("orders.closed", close_order)

    @router.route("orders.paid")
    async def paid(message: Message) -> None: ...

    Worker(queue, router, config)

A `Router` is itself a `Handler`. An exact type wins over a pattern
(`route_matching`, a regular expression that must match the whole type), and
patterns are tried in the order they were registered. Registering a type or a
pattern twice raises `ConfigError` while the worker is wired, so a process
that would route one type two ways never starts. `types` and `patterns` list
what a worker takes, for docs and operations; the worker logs them when it
starts.

A message of a type no route takes is dead-lettered at once, without
retries: `UnknownMessageType`, a `Permanent` naming the type. Waiting would
not teach this worker the type; after a release that adds the route, a replay
of the dead letter delivers it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar, overload

from services.kit.config import ConfigError
from services.kit.streams.message import Message
from services.kit.streams.policy import Handler, Permanent

H = TypeVar("H", bound=Handler)


class UnknownMessageType(Permanent):
    """No handler of this worker takes the message's type."""


class Router:
    """A handler that passes each message to the handler registered for its type."""

    def __init__(self) -> None:
        self._exact: dict[str, Handler] = {}
        self._patterns: list[tuple[re.Pattern[str], Handler]] = []

    @property
    def types(self) -> tuple[str, ...]:
        """The exact message types routed, sorted."""
        return tuple(sorted(self._exact))

    @property
    def patterns(self) -> tuple[str, ...]:
        """The type patterns routed (regular expressions), in the order they are tried."""
        return tuple(pattern.pattern for pattern, _ in self._patterns)

    @overload
    def route(self, message_type: str) -> Callable[[H], H]: ...

    @overload
    def route(self, message_type: str, handler: H) -> H: ...

    def route(self, message_type: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Send messages of `message_type` to `handler`; without one, a decorator that does."""
        if not message_type:
            raise ConfigError("a route needs a message type")

        def register(handler: H) -> H:
            if message_type in self._exact:
                raise ConfigError(f"message type {message_type!r} is routed twice")
            self._exact[message_type] = handler
            return handler

        return register if handler is None else register(handler)

    def route_matching(self, pattern: re.Pattern[str] | str, handler: H) -> H:
        """Send messages whose whole type matches `pattern` (and has no exact route) to
        `handler`: for a family of types that one handler takes alike."""
        compiled = re.compile(pattern)
        if compiled.pattern in self.patterns:
            raise ConfigError(f"message type pattern {compiled.pattern!r} is routed twice")
        self._patterns.append((compiled, handler))
        return handler

    def handler_for(self, message_type: str) -> Handler | None:
        """The handler that takes `message_type`, or None."""
        found = self._exact.get(message_type)
        if found is not None:
            return found
        for pattern, handler in self._patterns:
            if pattern.fullmatch(message_type):
                return handler
        return None

    async def __call__(self, message: Message) -> None:
        handler = self.handler_for(message.type)
        if handler is None:
            raise UnknownMessageType(
                f"no handler for message type {message.type!r} on this worker "
                f"(it takes {self._described()})"
            )
        await handler(message)

    def _described(self) -> str:
        taken = [*map(repr, self.types), *(f"/{p}/" for p in self.patterns)]
        return ", ".join(taken) or "no type"
