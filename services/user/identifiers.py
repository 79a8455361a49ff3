"""Emails and usernames in their one stored form, so one person is one account.

Unicode lets one address be written many ways: fullwidth letters (U+FF41 for `a`),
`é` precomposed or as `e` plus a combining accent, other cases, characters
nobody can see. The stored form is NFKC, then case-folded, then NFKC again
(Unicode's NFKC_Casefold, as PRECIS does in RFC 8265: the second pass keeps
the result stable), so every spelling that reads the same is the same key,
for registration, login and updates alike. Invisible and formatting
characters are refused rather than stripped: an address that differs from
the one a person sees is not theirs. Plain Python, no gRPC.
"""

from __future__ import annotations

import re
import unicodedata

from services.kit import errors

MAX_EMAIL = 254
# Deliberately loose: one '@', no spaces, a dot in the domain. Whether the
# address exists is for a confirmation mail to find out, not a regex.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_USERNAME = re.compile(r"^[a-z0-9._-]{3,32}$")
# Control, format (zero-width space and joiners, BOM, soft hyphen, bidi
# overrides), private use, unassigned, surrogates, and every separator.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cn", "Cs", "Zs", "Zl", "Zp"})
# Default-ignorable characters outside those categories: Hangul fillers, the
# combining grapheme joiner, Khmer inherent vowels, variation selectors.
_INVISIBLE = frozenset(
    (
        *(0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0),
        *range(0x180B, 0x1810),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    )
)


def canonical(raw: str) -> str:
    """NFKC_Casefold of the trimmed text: the form every spelling of it shares."""
    folded = unicodedata.normalize("NFKC", raw.strip()).casefold()
    return unicodedata.normalize("NFKC", folded)


def _visible(text: str, field: str) -> str:
    for char in text:
        if ord(char) in _INVISIBLE or unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            raise errors.InvalidArgument.field(
                field, "must not contain spaces, invisible or formatting characters"
            )
    return text


def normalize_email(raw: str) -> str:
    """The stored form of an email; InvalidArgument if malformed or holding invisible text."""
    email = _visible(canonical(raw), "email")
    domain = email.rpartition("@")[2]
    # Every label of the domain is non-empty: no trailing dot ("example.com."
    # is the same host for DNS but would be a second account here), no "..".
    if len(email) > MAX_EMAIL or not _EMAIL.match(email) or not all(domain.split(".")):
        raise errors.InvalidArgument.field("email", "must be an email address")
    return email


def normalize_username(raw: str) -> str:
    """The stored form of a username; InvalidArgument if malformed."""
    username = _visible(canonical(raw), "username")
    if not _USERNAME.match(username):
        raise errors.InvalidArgument.field(
            "username", "must be 3-32 letters, digits, '.', '_' or '-'"
        )
    return username
