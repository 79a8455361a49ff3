"""The platform's string rules, checked on request messages by their descriptors."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from shop.event.v1 import event_pb2
from shop.order.v1 import order_pb2
from shop.product.v1 import product_pb2
from shop.user.v1 import user_pb2

from services.kit import errors, strings


def _refused(message: Message) -> errors.InvalidArgument:
    with pytest.raises(errors.InvalidArgument) as raised:
        strings.check(message)
    return raised.value


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (order_pb2.CreateOrderRequest(customer_ref="ref\x00"), "customerRef"),
        (
            order_pb2.CreateOrderRequest(
                items=[order_pb2.LineItem(sku="A-1"), order_pb2.LineItem(sku="B\x00")]
            ),
            "items[1].sku",
        ),
        (user_pb2.RegisterRequest(email="a\x00@example.com"), "email"),
        (user_pb2.LoginRequest(username="ann\x1b"), "username"),
        (user_pb2.UpdateUserRequest(id="x", current_password="p\x7f"), "currentPassword"),
        (product_pb2.CreateProductRequest(name="Widget\x85"), "name"),
        (product_pb2.UpdateProductRequest(description="text\x00"), "description"),
        (event_pb2.PublishEventRequest(id="evt\r\n1"), "id"),
    ],
)
def test_a_control_character_anywhere_is_refused_naming_the_json_path(
    message: Message, path: str
) -> None:
    error = _refused(message)
    assert [v.field for v in error.violations] == [path]
    assert error.message.startswith(f"{path}: must not contain control characters (found U+")


def test_only_fields_declared_multiline_keep_line_breaks_and_tabs() -> None:
    strings.check(product_pb2.CreateProductRequest(name="W", description="one\ntwo\r\n\tthree"))
    assert _refused(product_pb2.CreateProductRequest(name="W\n")).violations[0].field == "name"
    bell = product_pb2.CreateProductRequest(description="a\nb\x07")
    assert _refused(bell).violations[0].field == "description"


def test_strings_are_capped_at_the_default_or_the_fields_own_ceiling() -> None:
    strings.check(user_pb2.RegisterRequest(email="a" * strings.MAX_LENGTH))
    long_email = _refused(user_pb2.RegisterRequest(email="a" * (strings.MAX_LENGTH + 1)))
    assert long_email.message == f"email: must be at most {strings.MAX_LENGTH} characters"
    strings.check(product_pb2.CreateProductRequest(description="d" * 2000))
    assert _refused(product_pb2.CreateProductRequest(description="d" * 2001)).message == (
        "description: must be at most 2000 characters"
    )


def test_visible_unicode_and_payloads_of_other_packages_pass() -> None:
    strings.check(order_pb2.CreateOrderRequest(customer_ref="Zoë 👩‍💻 東京"))
    data = struct_pb2.Struct()
    data.update({"note": "free\x00form"})  # event data: the event service's own rules
    strings.check(event_pb2.PublishEventRequest(id="evt-1", data=data))
    strings.check(user_pb2.GetMeRequest())


def test_every_string_field_the_services_read_is_walked() -> None:
    """Each request message of every service: a NUL in each string field is refused."""
    for module in (order_pb2, product_pb2, user_pb2, event_pb2):
        for name, desc in module.DESCRIPTOR.message_types_by_name.items():
            if not name.endswith("Request"):
                continue
            for fd in desc.fields:
                if fd.type == fd.TYPE_STRING and not fd.is_repeated:
                    message = getattr(module, name)(**{fd.name: "x\x00"})
                    assert _refused(message).violations[0].field == fd.json_name, (name, fd.name)
