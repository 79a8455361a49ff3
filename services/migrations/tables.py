"""Every table of the platform on one MetaData: what the migrations must build.

A service that defines a table in a new module adds the import here, once;
Alembic's environment and the schema test both read `target_metadata`.
"""

from __future__ import annotations

from services.inventory import repository as inventory_tables  # noqa: F401
from services.kit import audit, db, idempotency, inbox, outbox  # noqa: F401  (tables register on db.metadata)
from services.order import schema as order_tables  # noqa: F401
from services.user import repository as user_tables  # noqa: F401

target_metadata = db.metadata
