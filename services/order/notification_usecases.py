"""The customer's notifications use case: their own list, newest first (no gRPC here)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.cursor import CursorCodec, Page, TimeIdPosition, page_size, time_id_page
from services.order import notification_store
from services.order.domain import Caller
from services.order.notices import Notification

# The contract's default page (ListMyNotificationsRequest.limit) and the kit's maximum.
DEFAULT_PAGE = 20
MAX_PAGE = 100


def list_scope(caller: Caller) -> str:
    """What a cursor is bound to: the tenant and the user, admins included (it is
    always the caller's own list)."""
    return f"notifications:{caller.tenant}:{caller.user}"


class Notifications:
    """The notification use cases over one database."""

    def __init__(self, engine: AsyncEngine, cursors: CursorCodec) -> None:
        self._engine = engine
        self._cursors = cursors

    async def list_mine(self, caller: Caller, limit: int, cursor: str) -> Page[Notification]:
        """One page of the caller's own notifications; another user's cursor is refused."""

        async def fetch(after: TimeIdPosition | None, n: int) -> list[Notification]:
            async with db.reads(self._engine).connect() as conn:
                return await notification_store.page(conn, caller.tenant, caller.user, n, after)

        size = page_size(limit, DEFAULT_PAGE, MAX_PAGE)
        return await time_id_page(self._cursors, list_scope(caller), cursor, size, fetch)
