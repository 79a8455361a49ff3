"""Request parsing shared by every servicer: If-Match versions and UUID ids, strictly."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from services.kit import calls, errors
from services.kit.ids import parse_uuid
from services.order.domain import Caller
from services.product.domain import parse_id as product_id
from services.user.domain import parse_id as user_id


class _Metadata:
    """Only what `calls` reads of a servicer context: the invocation metadata."""

    def __init__(self, **headers: str) -> None:
        self._md = tuple((k.replace("_", "-"), v) for k, v in headers.items())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._md


def _if_match(value: str) -> int | None:
    return calls.if_match(cast(Any, _Metadata(if_match=value)))


@pytest.mark.parametrize(("raw", "version"), [('"3"', 3), ("3", 3), ('W/"3"', 3), (' "12" ', 12)])
def test_if_match_reads_quoted_bare_and_weak_versions(raw: str, version: int) -> None:
    assert _if_match(raw) == version


@pytest.mark.parametrize(
    "raw",
    [
        '"\u0661"',  # ARABIC-INDIC DIGIT ONE: a digit to `\d`, not a version
        "\u0661",
        '"\uff11"',  # FULLWIDTH DIGIT ONE
        '"1',  # unbalanced quotes
        '1"',
        "W/1",
        '"1"\n"2"',
        "v1",
        '"1234567890"',
    ],
)
def test_if_match_takes_ascii_digits_only(raw: str) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        _if_match(raw)
    assert raised.value.violations[0].field == "If-Match"


def test_an_absent_if_match_is_none() -> None:
    assert calls.if_match(cast(Any, _Metadata())) is None


def test_several_headers_read_in_one_pass_are_what_header_reads_one_by_one() -> None:
    class Repeated(_Metadata):
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("webhook-id", "first"), ("x-other", "o"), ("webhook-id", "second"))

    context = cast(Any, Repeated())
    names = ("webhook-id", "webhook-signature", "x-other")
    assert calls.headers(context, *names) == ("first", "", "o")
    assert calls.headers(context, *names) == tuple(calls.header(context, n) or "" for n in names)


ID = uuid.UUID("0b6f3c2e-8d1a-4c5b-9e7f-112233445566")


def test_the_canonical_spelling_is_the_id() -> None:
    assert parse_uuid(str(ID)) == ID
    assert product_id(str(ID)) == str(ID)
    assert user_id(str(ID)) == ID


@pytest.mark.parametrize(
    "raw",
    [
        "{0b6f3c2e-8d1a-4c5b-9e7f-112233445566}",
        "urn:uuid:0b6f3c2e-8d1a-4c5b-9e7f-112233445566",
        "0b6f3c2e8d1a4c5b9e7f112233445566",
        "0B6F3C2E-8D1A-4C5B-9E7F-112233445566",
        " 0b6f3c2e-8d1a-4c5b-9e7f-112233445566",
        "0b6f3c2e-8d1a-4c5b-9e7f-112233445566\n",
        "0b6f3c2e-8d1a-4c5b-9e7f-11223344556\u0666",  # ARABIC-INDIC DIGIT SIX
        "0b6f3c2e-8d1a4c5b-9e7f-112233445566-",
        "",
        "not-a-uuid",
    ],
)
def test_every_other_uuid_spelling_is_refused_by_every_service(raw: str) -> None:
    for parse in (parse_uuid, product_id, user_id):
        with pytest.raises(errors.InvalidArgument) as raised:
            parse(raw)
        assert raised.value.violations[0].field == "id"


def test_a_customer_is_limited_to_their_own_orders_and_an_admin_is_not() -> None:
    customer = Caller("acme", "u-1", tenant_wide=False)
    admin = Caller("acme", "u-2", tenant_wide=True)
    assert (customer.owner, admin.owner) == ("u-1", None)
    # A cursor of one list is never valid for another caller's list.
    assert (
        len({customer.list_scope, admin.list_scope, Caller("acme", "u-3", False).list_scope}) == 3
    )


@pytest.mark.parametrize("user", ["", "x" * 129, "a\x00b", "a\nb"])
def test_a_caller_needs_a_valid_user_id(user: str) -> None:
    with pytest.raises(errors.Unauthenticated):
        Caller("acme", user, tenant_wide=True)
