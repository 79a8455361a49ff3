"""One person, one account: every spelling of an email or username has one stored form."""

from __future__ import annotations

import pytest

from services.kit import errors
from services.user.identifiers import canonical, normalize_email, normalize_username

EMAIL = "rené@example.com"


@pytest.mark.parametrize(
    "spelling",
    [
        "rené@example.com",
        "rene\u0301@example.com",  # e + combining acute: the other form of é
        "RENÉ@EXAMPLE.COM",
        "\uff52\uff45\uff4e\u00e9\uff20\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d",  # fullwidth
        "  René@Example.com ",
    ],
)
def test_every_spelling_of_an_email_is_stored_one_way(spelling: str) -> None:
    assert normalize_email(spelling) == EMAIL


def test_usernames_fold_the_same_way() -> None:
    assert normalize_username("\uff21\uff4e\uff4e") == normalize_username("ANN") == "ann"
    assert canonical("Straße") == canonical("STRASSE") == "strasse"


@pytest.mark.parametrize(
    "invisible",
    [
        "\u200b",  # zero-width space
        "\u00ad",  # soft hyphen
        "\ufeff",  # BOM
        "\u2060",  # word joiner
        "\u202e",  # right-to-left override
        "\u3164",  # Hangul filler
        "\u00a0",  # no-break space
        "\ufe0f",  # variation selector
    ],
)
def test_invisible_and_formatting_characters_are_refused(invisible: str) -> None:
    for email in (f"ann{invisible}@example.com", f"ann@exam{invisible}ple.com"):
        with pytest.raises(errors.InvalidArgument) as raised:
            normalize_email(email)
        assert raised.value.violations[0].field == "email"
    with pytest.raises(errors.InvalidArgument) as raised:
        normalize_username(f"ann{invisible}ie")
    assert raised.value.violations[0].field == "username"


@pytest.mark.parametrize("email", ["ann@example.com.", "ann@example..com", "ann@.example.com"])
def test_a_domain_with_an_empty_label_is_refused(email: str) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        normalize_email(email)
    assert raised.value.message == "email: must be an email address"


def test_the_stored_form_is_stable() -> None:
    for raw in ("ﬁ@example.com", "Ǆ@example.com", "ß@example.com", EMAIL):
        once = normalize_email(raw)
        assert normalize_email(once) == once
