"""Text forms shared by every service: unpadded base64url and RFC 3339 UTC instants.

Plain functions with no gRPC in them, so domain modules may use them too.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), as JWKs, JWTs and page cursors carry it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """The bytes of unpadded (or padded) base64url; binascii.Error if it is not base64."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def utc_rfc3339(moment: datetime, timespec: str = "auto") -> str:
    """An aware instant in UTC, written with a `Z` (e.g. 2024-05-01T12:00:00.250Z).

    `timespec` is datetime.isoformat's: "auto" drops a zero microsecond part,
    "milliseconds" always writes three digits.
    """
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
