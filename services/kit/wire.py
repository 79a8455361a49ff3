"""What servicers put on the wire: protobuf well-known types of domain values, and
answers serialised once and sent many times."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

M = TypeVar("M", bound=Message)


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class Encoded:
    """A response message serialised already (a cached answer): the kit's interceptor
    sends its bytes as they are instead of serialising a message again."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Encodings:
    """The serialised answers built from recent source objects (a cached page), by the
    source's identity: a source that is still the same object has the same answer,
    so a cache hit costs no message building and no serialisation. Holds up to
    `max_entries` sources (the oldest goes first); a source is never mutated."""

    def __init__(self, max_entries: int = 256) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        # id(source) -> (source, its answer); holding the source keeps its id unique.
        self._answers: OrderedDict[int, tuple[object, Encoded]] = OrderedDict()

    def get(self, source: object, build: Callable[[], M]) -> M:
        """The answer built from `source`, serialised once; typed as the message so a
        servicer keeps its generated signature (only sends_encoded sees the object)."""
        known = self._answers.get(id(source))
        if known is not None and known[0] is source:
            return cast(M, known[1])
        answer = Encoded(build().SerializeToString())
        self._answers[id(source)] = (source, answer)
        while len(self._answers) > self._max:
            self._answers.popitem(last=False)
        return cast(M, answer)


def sends_encoded(
    serializer: Callable[[Any], bytes] | None,
) -> Callable[[Any], bytes] | None:
    """The handler's response serializer, passing Encoded answers through untouched."""
    if serializer is None:
        return None
    serialize = serializer

    def serialized(message: Any) -> bytes:
        if type(message) is Encoded:
            return message.data
        return serialize(message)

    return serialized
