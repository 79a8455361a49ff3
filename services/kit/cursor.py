"""Keyset pagination: page sizes, and opaque cursors (base64url JSON, signed, bound to a scope).

A cursor is `base64url(json(position)) "." base64url(hmac)`; the MAC covers the
scope (tenant and list) too, so an edited cursor, or one issued to another
tenant, is refused as invalid_argument instead of reading the wrong page.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from services.kit import errors
from services.kit.encoding import b64url, unb64url


def page_size(limit: int, default: int, maximum: int) -> int:
    """A list request's page size: 0 means `default`; otherwise 1 to `maximum`.

    0 cannot be refused: proto3 cannot tell `limit=0` from no limit at all, and
    every client that leaves the parameter out would be refused with it.
    """
    if limit == 0:
        return default
    if not 0 < limit <= maximum:
        raise errors.InvalidArgument.field(
            "limit", f"must be 1-{maximum}, or 0 or absent for {default}"
        )
    return limit


@dataclass(frozen=True)
class TimeIdPosition:
    """The last row of a page ordered by (timestamp DESC, id DESC)."""

    ts: datetime
    id: uuid.UUID


class CursorCodec:
    """Encodes and verifies cursors with a secret shared by a service's replicas."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("cursor secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, scope: str, body: bytes) -> bytes:
        return hmac.new(self._secret, scope.encode() + b"\0" + body, hashlib.sha256).digest()[:16]

    def encode(self, scope: str, position: dict[str, str]) -> str:
        """A cursor for `position` valid only within `scope`."""
        body = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        return f"{b64url(body)}.{b64url(self._mac(scope, body))}"

    def decode(self, scope: str, cursor: str) -> dict[str, str]:
        """The position inside a cursor; InvalidArgument if it was not issued for `scope`."""
        invalid = errors.InvalidArgument.field("cursor", "is not a cursor this list issued")
        try:
            body_part, mac_part = cursor.split(".", 1)
            body, mac = unb64url(body_part), unb64url(mac_part)
        except (ValueError, binascii.Error):
            raise invalid from None
        # Only the canonical spelling counts: base64's unused low bits would
        # otherwise let one cursor be written several ways.
        if b64url(body) != body_part or b64url(mac) != mac_part:
            raise invalid
        if not hmac.compare_digest(mac, self._mac(scope, body)):
            raise invalid
        try:
            position = json.loads(body)
        except ValueError:
            raise invalid from None
        if not isinstance(position, dict) or not all(isinstance(v, str) for v in position.values()):
            raise invalid
        return position

    def encode_time_id(self, scope: str, position: TimeIdPosition) -> str:
        """A cursor for a (timestamp, id) keyset."""
        return self.encode(scope, {"ts": position.ts.isoformat(), "id": str(position.id)})

    def decode_time_id(self, scope: str, cursor: str) -> TimeIdPosition:
        """The (timestamp, id) position inside a cursor."""
        position = self.decode(scope, cursor)
        try:
            ts = datetime.fromisoformat(position["ts"])
            return TimeIdPosition(ts=ts, id=uuid.UUID(position["id"]))
        except (KeyError, ValueError):
            raise errors.InvalidArgument.field(
                "cursor", "is not a cursor this list issued"
            ) from None


class Dated(Protocol):
    """A row of a (created_at, id) keyset."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


RowT = TypeVar("RowT", bound=Dated)


@dataclass(frozen=True)
class Page(Generic[RowT]):
    """One page of a keyset list and the cursor of the next (None on the last page)."""

    items: list[RowT]
    next_cursor: str | None


async def time_id_page(
    codec: CursorCodec,
    scope: str,
    cursor: str,
    limit: int,
    fetch: Callable[[TimeIdPosition | None, int], Awaitable[Sequence[RowT]]],
) -> Page[RowT]:
    """A page of at most `limit` rows after the cursor's position: `fetch(after, n)`
    reads n rows in keyset order; one row more than asked says whether a next page exists."""
    after = codec.decode_time_id(scope, cursor) if cursor else None
    found = list(await fetch(after, limit + 1))
    if len(found) <= limit:
        return Page(found, None)
    last = found[limit - 1]
    return Page(
        found[:limit], codec.encode_time_id(scope, TimeIdPosition(last.created_at, last.id))
    )
