"""Deterministic shipments and active orders in MongoDB, for the demo, tests and load runs.

    python -m stubs.shipments --mongo-url mongodb://127.0.0.1:17017/shop --tenant demo --count 1000

Shipment n (`SHP-000001` ...) of a tenant is, in collection `shipments`,

    {"_id": "<tenant>/SHP-00000n", "tenant", "shipment_id", "courier",
     "active_order_id": "ORD-00000n" | None, "destination": {"country", "postal_code", "city"},
     "status": "in_transit", "updated_at": datetime (UTC)}

and its order, in `active_orders`, unless n is a multiple of `NO_ORDER_EVERY`,

    {"_id": "<tenant>/ORD-00000n", "tenant", "order_id", "shipment_id",
     "priority": "standard" | "express", "total_cents": int, "status": "active"}

Everything but `updated_at` (the moment of seeding) follows from n alone, so
every tenant and every run get the same data. Seeding replaces documents by
`_id`, so running it again restores them and never duplicates. The CLI reads
the database from the URL's path ("shop" when it has none).

nx-27017 (the local MongoDB-wire server) mishandles null in queries (`{"f": None}`,
`$ne: None`, `$exists`): read a shipment and test `active_order_id` in Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo import AsyncMongoClient, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase

from stubs import utc_now

SHIPMENTS = "shipments"
ACTIVE_ORDERS = "active_orders"
NO_ORDER_EVERY = 50
EXPRESS_EVERY = 5  # one shipment in five is express, as in the demo's order mix
_BATCH = 500
# (country, city, first postal code, how many codes follow): real code formats, so
# routing by postal area has something to work with.
_PLACES = (
    ("DE", "Berlin", 10115, 200),
    ("DE", "Munich", 80331, 700),
    ("FR", "Paris", 75001, 20),
    ("NL", "Amsterdam", 1011, 100),
    ("ES", "Madrid", 28001, 50),
    ("IT", "Milan", 20121, 40),
    ("PL", "Warsaw", 200, 900),
    ("US", "New York", 10001, 290),
)


def shipment_id(n: int) -> str:
    """The id of the tenant's n-th seeded shipment, from 1."""
    return f"SHP-{n:06d}"


def order_id(n: int) -> str:
    """The id of the active order of shipment n (which may have none: `has_active_order`)."""
    return f"ORD-{n:06d}"


def has_active_order(n: int) -> bool:
    return n % NO_ORDER_EVERY != 0


def _postal_code(country: str, code: int) -> str:
    if country == "PL":
        return f"{code // 1000:02d}-{code % 1000:03d}"
    return f"{code:04d}" if country == "NL" else f"{code:05d}"


def shipment_documents(
    tenant: str, n: int, courier: str, updated_at: datetime
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Shipment n of a tenant and its active order (None when it has none)."""
    rng = random.Random(n)  # per shipment, so one shipment never depends on the count
    country, city, first, span = _PLACES[rng.randrange(len(_PLACES))]
    order = order_id(n) if has_active_order(n) else None
    shipment = {
        "_id": f"{tenant}/{shipment_id(n)}",
        "tenant": tenant,
        "shipment_id": shipment_id(n),
        "courier": courier,
        "active_order_id": order,
        "destination": {
            "country": country,
            "postal_code": _postal_code(country, first + rng.randrange(span)),
            "city": city,
        },
        "status": "in_transit",
        "updated_at": updated_at,
    }
    if order is None:
        return shipment, None
    active_order = {
        "_id": f"{tenant}/{order}",
        "tenant": tenant,
        "order_id": order,
        "shipment_id": shipment_id(n),
        "priority": "express" if n % EXPRESS_EVERY == 0 else "standard",
        "total_cents": rng.randrange(500, 50_000),
        "status": "active",
    }
    return shipment, active_order


def _batches(count: int) -> Iterator[range]:
    for start in range(1, count + 1, _BATCH):
        yield range(start, min(start + _BATCH, count + 1))


async def seed_shipments(
    db: AsyncDatabase[dict[str, Any]], tenant: str, count: int, *, courier: str = "courier"
) -> int:
    """Upsert shipments 1..count of a tenant and their active orders; returns count."""
    if not tenant or count < 0:
        raise ValueError(f"need a tenant and a count >= 0, got {tenant!r} and {count}")
    updated_at = utc_now()
    for batch in _batches(count):
        shipments: list[ReplaceOne[dict[str, Any]]] = []
        orders: list[ReplaceOne[dict[str, Any]]] = []
        for n in batch:
            shipment, order = shipment_documents(tenant, n, courier, updated_at)
            shipments.append(ReplaceOne({"_id": shipment["_id"]}, shipment, upsert=True))
            if order is not None:
                orders.append(ReplaceOne({"_id": order["_id"]}, order, upsert=True))
        # Orders first: a reader that finds a shipment always finds its order.
        if orders:
            await db[ACTIVE_ORDERS].bulk_write(orders, ordered=False)
        await db[SHIPMENTS].bulk_write(shipments, ordered=False)
    return count


async def _seed(mongo_url: str, tenant: str, count: int, courier: str) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        db = client.get_default_database("shop")
        started = time.monotonic()
        seeded = await seed_shipments(db, tenant, count, courier=courier)
        return {
            "event": "seeded",
            "database": db.name,
            "tenant": tenant,
            "shipments": seeded,
            "active_orders": seeded - seeded // NO_ORDER_EVERY,
            "ms": round((time.monotonic() - started) * 1000, 1),
        }
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stubs.shipments", description=__doc__)
    parser.add_argument("--mongo-url", required=True, help="mongodb://host:port/database")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--courier", default="courier")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must not be negative")
    print(json.dumps(asyncio.run(_seed(args.mongo_url, args.tenant, args.count, args.courier))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
