"""Answers serialised once: the same source object gives the same bytes, without building again."""

from __future__ import annotations

import pytest
from shop.product.v1 import product_pb2

from services.kit import wire


class Source:
    """A cached value an answer is built from (compared by identity, never by value)."""


def _builder(calls: list[int], name: str) -> object:
    def build() -> product_pb2.Product:
        calls.append(1)
        return product_pb2.Product(id="p-1", name=name)

    return build


def test_one_source_is_serialised_once_and_sent_as_those_bytes() -> None:
    encodings = wire.Encodings()
    serialize = wire.sends_encoded(product_pb2.Product.SerializeToString)
    assert serialize is not None
    source, calls = Source(), []
    first = encodings.get(source, _builder(calls, "one"))  # type: ignore[arg-type]
    again = encodings.get(source, _builder(calls, "two"))  # type: ignore[arg-type]
    assert first is again
    assert len(calls) == 1
    assert serialize(first) == product_pb2.Product(id="p-1", name="one").SerializeToString()


def test_another_source_with_the_same_content_is_built_again() -> None:
    encodings, calls = wire.Encodings(), []
    encodings.get(Source(), _builder(calls, "x"))  # type: ignore[arg-type]
    encodings.get(Source(), _builder(calls, "x"))  # type: ignore[arg-type]
    assert len(calls) == 2


def test_the_oldest_source_goes_first_when_full() -> None:
    encodings, calls = wire.Encodings(max_entries=2), []
    a, b, c = Source(), Source(), Source()
    for source in (a, b, c, b, a):
        encodings.get(source, _builder(calls, "x"))  # type: ignore[arg-type]
    assert len(calls) == 4  # a, b, c, then a again (evicted by c); b was still held
    with pytest.raises(ValueError, match="max_entries"):
        wire.Encodings(max_entries=0)


def test_messages_that_are_not_encoded_go_through_the_handlers_serializer() -> None:
    serialize = wire.sends_encoded(product_pb2.Product.SerializeToString)
    assert serialize is not None
    message = product_pb2.Product(id="p-2")
    assert serialize(message) == message.SerializeToString()
    assert wire.sends_encoded(None) is None
