"""Recorded v1 draft-order responses: what a seed-001 client got, to replay against today's build.

`python -m tests.contract.v1_orders --url http://127.0.0.1:8080` (re)records
them from a running platform into v1_orders.json. One scripted session of
order requests, as one newly registered customer of a new tenant: create (and
its idempotency replays and refusals), read, confirm under If-Match, close,
list with keyset pages. The contract test runs the same script against the
build under test and demands the same status, compared headers and body bytes
for every step.

Only what differs from run to run is masked, by exact substitution: the orders
the run created (`<order-1>`, `<order-2>`, ... in the order they first
appear), the tenant (`<tenant>`), the customer's user id (`<user>`), every
RFC 3339 timestamp (`<time>`) and the keyset cursor (`<cursor>`: signed with
each deployment's own secret). Everything else (key order, number formatting,
spacing) is kept byte for byte. Request paths and headers in the script use
the same placeholders; the run fills them in with its own values.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests import identity

RECORDING = Path(__file__).with_suffix(".json")
COMPARED_HEADERS = ("content-type", "etag", "idempotent-replayed")
# A well-formed order id that no run creates.
UNKNOWN = "00000000-0000-4000-8000-000000000000"
DRAFT = {
    "customerRef": "cust-contract",
    "items": [
        {"sku": "SKU-A", "quantity": 2, "unitPriceCents": 450},
        {"sku": "SKU-B", "quantity": 1, "unitPriceCents": 1999},
    ],
}
TOTAL = 2 * 450 + 1999


def _json(value: Any) -> str:
    """A request body as a client would send it: compact JSON, fixed here rather than by
    the HTTP client, so the recorded bytes are the bytes sent."""
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Step:
    """One request of the script. `path` and header values may name the run's values
    (`<order-1>`, `<cursor>`, `<tenant>`); `body` is the raw request body (None: none)."""

    name: str
    method: str
    path: str
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Sent with the customer's bearer token (False: anonymous).
    token: bool = True


def _create(name: str, key: str | None, body: str | None) -> Step:
    headers = {} if key is None else {"Idempotency-Key": key}
    return Step(name, "POST", "/v1/orders", body, headers)


def _confirm(name: str, if_match: str | None, total: int) -> Step:
    headers = {} if if_match is None else {"If-Match": if_match}
    return Step(
        name, "PATCH", "/v1/orders/<order-1>/confirm", _json({"totalCents": total}), headers
    )


SCRIPT: list[Step] = [
    _create("create-draft", "contract-draft", _json(DRAFT)),
    _create("create-replayed", "contract-draft", _json(DRAFT)),
    _create("create-same-key-other-body", "contract-draft", _json({"customerRef": "other"})),
    _create("create-without-key", None, _json(DRAFT)),
    _create(
        "create-bad-line",
        "contract-bad-line",
        _json({"items": [{"sku": "SKU-A", "quantity": 0, "unitPriceCents": 450}]}),
    ),
    _create(
        "create-negative-price",
        "contract-bad-line",
        _json({"items": [{"sku": "SKU-A", "quantity": 1, "unitPriceCents": -1}]}),
    ),
    Step(
        "create-without-token",
        "POST",
        "/v1/orders",
        _json(DRAFT),
        {"Idempotency-Key": "contract-anonymous", "X-Tenant-Id": "<tenant>"},
        token=False,
    ),
    Step("get", "GET", "/v1/orders/<order-1>"),
    Step("get-with-own-tenant", "GET", "/v1/orders/<order-1>", headers={"X-Tenant-Id": "<tenant>"}),
    Step("get-with-other-tenant", "GET", "/v1/orders/<order-1>", headers={"X-Tenant-Id": "other"}),
    Step("get-not-a-uuid", "GET", "/v1/orders/not-a-uuid"),
    Step("get-unknown", "GET", f"/v1/orders/{UNKNOWN}"),
    _confirm("confirm-without-if-match", None, TOTAL),
    _confirm("confirm-if-match-not-a-version", '"abc"', TOTAL),
    _confirm("confirm-stale-if-match", '"7"', TOTAL),
    _confirm("confirm-wrong-total", '"1"', TOTAL + 1),
    _confirm("confirm", '"1"', TOTAL),
    _confirm("confirm-again", '"2"', TOTAL),
    _confirm("confirm-again-stale", '"1"', TOTAL),
    Step(
        "confirm-unknown",
        "PATCH",
        f"/v1/orders/{UNKNOWN}/confirm",
        _json({"totalCents": 0}),
        {"If-Match": '"1"'},
    ),
    Step("close-stale-if-match", "POST", "/v1/orders/<order-1>/close", headers={"If-Match": '"1"'}),
    Step("close", "POST", "/v1/orders/<order-1>/close", headers={"If-Match": '"2"'}),
    Step("close-again", "POST", "/v1/orders/<order-1>/close"),
    Step("get-closed", "GET", "/v1/orders/<order-1>"),
    _create("create-empty-body", "contract-empty", "{}"),
    _create("create-no-body", "contract-no-body", None),
    Step("close-draft", "POST", "/v1/orders/<order-2>/close"),
    Step("list", "GET", "/v1/orders"),
    Step("list-first-page", "GET", "/v1/orders?limit=1"),
    Step("list-next-page", "GET", "/v1/orders?limit=1&cursor=<cursor>"),
    Step("list-bad-cursor", "GET", "/v1/orders?limit=1&cursor=not-a-cursor"),
    Step("list-limit-too-big", "GET", "/v1/orders?limit=500"),
    Step(
        "list-without-token", "GET", "/v1/orders", headers={"X-Tenant-Id": "<tenant>"}, token=False
    ),
]

_CURSOR = re.compile(r'"nextCursor":"([^"]*)"')
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")


class Session:
    """One run of the script: the run's values by placeholder, learnt as they appear."""

    def __init__(self, http: httpx.Client, account: identity.Account) -> None:
        self.http = http
        self.account = account
        self.values: dict[str, str] = {"<tenant>": account.tenant, "<user>": account.id}
        self.orders = 0

    def fill(self, text: str) -> str:
        for placeholder, value in self.values.items():
            text = text.replace(placeholder, value)
        return text

    def mask(self, text: str) -> str:
        text = _CURSOR.sub('"nextCursor":"<cursor>"', text)
        # Longest first: no value is masked inside another.
        for placeholder, value in sorted(self.values.items(), key=lambda kv: -len(kv[1])):
            if placeholder != "<cursor>":
                text = text.replace(value, placeholder)
        return _TIME.sub("<time>", text)

    def learn(self, body: bytes) -> None:
        """Remember a new order id (a one-order response) and the latest cursor."""
        try:
            parsed = json.loads(body)
        except ValueError:
            return
        if not isinstance(parsed, dict):
            return
        order_id = parsed.get("id")
        if isinstance(order_id, str) and order_id not in self.values.values():
            self.orders += 1
            self.values[f"<order-{self.orders}>"] = order_id
        cursor = parsed.get("nextCursor")
        if isinstance(cursor, str) and cursor:
            self.values["<cursor>"] = cursor

    def observe(self, step: Step) -> dict[str, Any]:
        """Send one step; what the client saw, masked."""
        headers = {name: self.fill(value) for name, value in step.headers.items()}
        if step.token:
            headers["Authorization"] = f"Bearer {self.account.token}"
        content = None
        if step.body is not None:
            content = step.body.encode()
            headers["Content-Type"] = "application/json"
        response = self.http.request(
            step.method, self.fill(step.path), content=content, headers=headers
        )
        self.learn(response.content)
        return {
            "step": step.name,
            "request": {
                "method": step.method,
                "path": step.path,
                "headers": step.headers,
                "body": step.body,
            },
            "status": response.status_code,
            "headers": {h: response.headers.get(h) for h in COMPARED_HEADERS},
            "body": self.mask(response.content.decode()),
        }


def run(http: httpx.Client) -> list[dict[str, Any]]:
    """The whole script as one new customer of a new tenant."""
    account = identity.customer(http, f"contract-{uuid.uuid4().hex[:12]}")
    session = Session(http, account)
    return [session.observe(step) for step in SCRIPT]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--out", type=Path, default=RECORDING, help="where to write it")
    args = parser.parse_args()
    with httpx.Client(base_url=args.url, timeout=10) as http:
        recorded = run(http)
    args.out.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"recorded {len(recorded)} responses into {args.out}")


if __name__ == "__main__":
    main()
