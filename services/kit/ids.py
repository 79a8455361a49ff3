"""Resource ids in requests: UUIDs in their one canonical spelling.

Python's `uuid.UUID` also reads `{...}`, `urn:uuid:...`, uppercase and
undashed forms. Accepting those would give one resource many ids: cache keys,
cursors, idempotent replays and logs would disagree about which order or
product a request names. So a request id is the lowercase, dashed 36-character
form the platform itself writes, and anything else is invalid_argument.
"""

from __future__ import annotations

import re
import uuid

from services.kit import errors

_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_uuid(raw: str, field: str = "id") -> uuid.UUID:
    """The UUID `raw` spells canonically; InvalidArgument naming `field` otherwise."""
    if not _CANONICAL.fullmatch(raw):
        # The words v1 clients were recorded seeing (tests/contract/): the
        # canonical form is stated in the contracts' comments instead.
        raise errors.InvalidArgument.field(field, "must be a UUID")
    return uuid.UUID(raw)
