"""The platform's string rules for requests, checked for every RPC in one place.

Every string in a `shop.*` request message (nested messages, repeated fields
and map entries included) must hold no control character (Unicode category
Cc: NUL, ESC, DEL, the C1 range) and at most MAX_LENGTH characters. A field's
`(shop.api.v1.field)` option declares its exceptions once, in the contract:
`multiline` lets free text keep line feeds, carriage returns and tabs;
`max_length` sets its own ceiling. The interceptor calls `check` before the
handler runs, so a refused request has had no effect anywhere: PostgreSQL
refuses NUL in text only after the ERP has stored a product, and control
characters forge log lines and break the headers ids are sent in.

The field's own rules (an email's shape, a SKU's pattern) stay in the domain;
these are the rules no string may break. Messages of other packages (google.*
well-known types such as Struct payloads, Envoy's rate-limit protocol) are not
walked: they are data or infrastructure, not fields a client fills in.

Cost: the plan of a message type (which fields to look at, and how) is built
once and cached, so a request without strings anywhere costs one dict lookup,
and one with strings one regex search per non-empty string
(bench/string_rules.py measures it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from shop.api.v1 import field_pb2

from services.kit import errors

MAX_LENGTH = 1024
PACKAGE_PREFIX = "shop."
# Cc is exactly U+0000-U+001F and U+007F-U+009F.
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class _Rule:
    """How to check one field of a message type."""

    name: str  # the Python attribute
    json_name: str  # how the client spelled it (camelCase), for the error
    repeated: bool
    is_map: bool
    nested: Descriptor | None  # a shop.* message (or map value) holding strings
    text: bool  # the field (or map value) is a string
    forbidden: re.Pattern[str]
    max_length: int


_plans: dict[Descriptor, tuple[_Rule, ...]] = {}


class _Violation(Exception):
    """A broken rule on its way up the walk, which prefixes the path (only on failure)."""

    def __init__(self, path: str, description: str) -> None:
        self.path, self.description = path, description


def check(message: Message) -> None:
    """InvalidArgument naming the first string field (JSON path) that breaks the rules."""
    desc: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]  # upb's is the same type
    plan = _plans.get(desc)
    if plan is None:
        plan = _plan(desc)
    if plan:
        try:
            _walk(message, plan)
        except _Violation as broken:
            raise errors.InvalidArgument.field(broken.path, broken.description) from None


def _walk(message: Message, plan: tuple[_Rule, ...]) -> None:
    for rule in plan:
        value = getattr(message, rule.name)
        try:
            if rule.is_map:
                for key, item in value.items():
                    _map_entry(rule, key, item)
            elif rule.repeated:
                for n, item in enumerate(value):
                    try:
                        _item(rule, item)
                    except _Violation as broken:
                        broken.path = f"[{n}]{broken.path}"
                        raise
            elif rule.text:
                if value:
                    _text(rule, value)
            elif message.HasField(rule.name):
                _item(rule, value)
        except _Violation as broken:
            broken.path = rule.json_name + broken.path
            raise


def _map_entry(rule: _Rule, key: object, item: object) -> None:
    if isinstance(key, str):
        _text(rule, key)
    try:
        _item(rule, item)
    except _Violation as broken:
        broken.path = f".{key}{broken.path}"
        raise


def _item(rule: _Rule, value: object) -> None:
    if rule.text:
        _text(rule, value)  # type: ignore[arg-type]
    elif rule.nested is not None:
        try:
            _walk(value, _plan(rule.nested))  # type: ignore[arg-type]
        except _Violation as broken:
            broken.path = "." + broken.path
            raise


def _text(rule: _Rule, value: str) -> None:
    if len(value) > rule.max_length:
        raise _Violation("", f"must be at most {rule.max_length} characters")
    found = rule.forbidden.search(value)
    if found is not None:
        raise _Violation(
            "", f"must not contain control characters (found U+{ord(found.group()):04X})"
        )


def _plan(desc: Descriptor) -> tuple[_Rule, ...]:
    """The cached rules of a message type: empty unless it holds strings somewhere."""
    plan = _plans.get(desc)
    if plan is None:
        plan = ()
        if desc.full_name.startswith(PACKAGE_PREFIX):
            plan = tuple(rule for fd in desc.fields if (rule := _rule(fd)) is not None)
        _plans[desc] = plan
    return plan


def _rule(fd: FieldDescriptor) -> _Rule | None:
    target, is_map = fd, False
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        target, is_map = fd.message_type.fields_by_name["value"], True
    text = target.type == FieldDescriptor.TYPE_STRING
    nested = target.message_type if target.type == FieldDescriptor.TYPE_MESSAGE else None
    if nested is not None and not _holds_text(nested, set()):
        nested = None
    if not (text or nested is not None or (is_map and _map_key_is_text(fd))):
        return None
    # Unset, the option reads as an all-default FieldRules: no exception.
    own: field_pb2.FieldRules = fd.GetOptions().Extensions[field_pb2.field]  # type: ignore[index]
    return _Rule(
        name=fd.name,
        json_name=fd.json_name,
        repeated=fd.is_repeated,
        is_map=is_map,
        nested=nested,
        text=text,
        forbidden=_CONTROL_BUT_LINES if own.multiline else _ANY_CONTROL,
        max_length=own.max_length or MAX_LENGTH,
    )


def _map_key_is_text(fd: FieldDescriptor) -> bool:
    key: FieldDescriptor = fd.message_type.fields_by_name["key"]  # type: ignore[union-attr]
    return key.type == FieldDescriptor.TYPE_STRING


def _holds_text(desc: Descriptor, seen: set[str]) -> bool:
    """Whether a shop.* message type has a string field, at any depth (cycles allowed)."""
    if not desc.full_name.startswith(PACKAGE_PREFIX) or desc.full_name in seen:
        return False
    seen.add(desc.full_name)
    for fd in desc.fields:
        if fd.type == FieldDescriptor.TYPE_STRING:
            return True
        if fd.message_type is not None and _holds_text(fd.message_type, seen):
            return True
    return False
