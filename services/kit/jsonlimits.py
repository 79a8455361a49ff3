"""The rules every JSON document the platform accepts must keep, and a parser that applies them.

The edge applies the same rules to every JSON request body before the
transcoder turns it into protobuf (`envoy/edge.lua`, `json_body_problem`);
the services apply them again to what they parse or convert themselves, so a
native gRPC caller meets the same rules:

- at most `MAX_DEPTH` levels of nested objects and arrays (the outermost one
  is level 1). Deeper documents exhaust Python's recursion limit, and a
  `google.protobuf.Struct` costs three message levels per JSON level against
  protobuf's limit of 100;
- no key twice in one object: parsers disagree on which copy wins;
- no null array element: proto3's JSON mapping drops it without a word.

Each is refused as InvalidArgument (400) naming where in the document.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from services.kit import errors

MAX_DEPTH = 32


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise errors.InvalidArgument(f"the JSON body repeats the key {key!r} in one object")
        document[key] = value
    return document


def _too_deep(where: str) -> errors.InvalidArgument:
    return errors.InvalidArgument.field(
        where or "body", f"is nested more than {MAX_DEPTH} levels deep"
    )


def check(document: object, where: str = "") -> None:
    """Refuse a decoded document (a parsed body, a converted Struct) that breaks the rules.

    `where` names the document in messages (e.g. "data"); its own level counts as 1.
    """
    # Iterative, so a document too deep for the rules is not too deep to check.
    stack: list[tuple[object, int, str]] = [(document, 1, where)]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            children = [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if item is None:
                    raise errors.InvalidArgument.field(
                        f"{path}[{index}]", "a null array element is not allowed"
                    )
            children = [(v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            continue
        if depth > MAX_DEPTH:
            raise _too_deep(where)
        stack.extend((child, depth + 1, name) for child, name in children)


def loads(body: bytes | str) -> Any:
    """Parse a JSON body under the rules; InvalidArgument (400) saying what is wrong."""
    try:
        document = json.loads(body, object_pairs_hook=_unique, parse_constant=_reject_constant)
    except RecursionError:
        raise _too_deep("") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise errors.InvalidArgument(f"the body is not valid JSON: {exc}") from None
    check(document)
    return document
