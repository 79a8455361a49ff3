"""Recorded v1 product responses: what a v1 client got, to replay against today's build.

`python -m tests.contract.v1_products --url http://127.0.0.1:8080` (re)records
them from a running platform into v1_products.json; the contract test replays
every request and demands the same status, headers and body bytes. Only the
cursor inside `nextCursor` is masked: it is signed with each deployment's own
secret. The `contract` tenant's data is seeded by stubs/data and never written.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import httpx

RECORDING = Path(__file__).with_suffix(".json")
TENANT = "contract"
# stubs/data/catalog.json: the contract tenant's first product.
PRODUCT = "4a7d0ba1-5703-4b68-a5a5-6490e8646f13"
COMPARED_HEADERS = ("content-type", "etag")

REQUESTS: list[str] = [
    "/v1/products",
    "/v1/products?limit=2",
    f"/v1/products/{PRODUCT}",
    f"/v1/products/{PRODUCT}/inventory",
    "/v1/products/00000000-0000-4000-8000-000000000000",
    "/v1/products/not-a-uuid",
    "/v1/products?limit=500",
]

_CURSOR = re.compile(rb'"nextCursor":"[^"]*"')


def masked(body: bytes) -> str:
    return _CURSOR.sub(b'"nextCursor":"<cursor>"', body).decode()


def observe(http: httpx.Client, path: str) -> dict[str, Any]:
    """One GET as a v1 client sees it."""
    response = http.get(path, headers={"X-Tenant-Id": TENANT})
    return {
        "request": {"method": "GET", "path": path, "headers": {"X-Tenant-Id": TENANT}},
        "status": response.status_code,
        "headers": {h: response.headers.get(h) for h in COMPARED_HEADERS},
        "body": masked(response.content),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    args = parser.parse_args()
    with httpx.Client(base_url=args.url, timeout=10) as http:
        recorded = [observe(http, path) for path in REQUESTS]
    RECORDING.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"recorded {len(recorded)} responses into {RECORDING}")


if __name__ == "__main__":
    main()
