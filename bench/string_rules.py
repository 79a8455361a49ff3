"""What the string rules cost each RPC: `strings.check` on typical requests, in-process.

    PYTHONPATH=.:gen .venv/bin/python -m bench.string_rules

Prints the machine, the Python and the nanoseconds per call (best of five
runs of 100,000 calls) for a request without strings, a login, an order of
three items and a product write; the first call of each type (which builds
and caches its plan) is left out, as a long-running server pays it once.
"""

from __future__ import annotations

import platform
import sys
import time
import timeit
from functools import partial

from google.protobuf.message import Message
from shop.order.v1 import order_pb2
from shop.product.v1 import product_pb2
from shop.user.v1 import user_pb2

from services.kit import strings

CALLS = 100_000
REQUESTS: dict[str, Message] = {
    "GetMe (no strings)": user_pb2.GetMeRequest(),
    "Login (2 strings)": user_pb2.LoginRequest(
        email="ann@example.com", password="correct horse battery staple"
    ),
    "CreateOrder (1 + 3 items)": order_pb2.CreateOrderRequest(
        customer_ref="cust-7",
        items=[
            order_pb2.LineItem(sku=f"SKU-{n}", quantity=1, unit_price_cents=450) for n in range(3)
        ],
    ),
    "CreateProduct (3 strings, 500-char description)": product_pb2.CreateProductRequest(
        sku="WIDGET-1", name="Widget", description="A sturdy widget.\n" * 29, price_cents=1000
    ),
}


def main() -> None:
    print(f"{time.strftime('%Y-%m-%d')} {platform.machine()} {platform.processor() or ''}")
    print(f"Python {sys.version.split()[0]}, {CALLS} calls per run, best of 5")
    for name, message in REQUESTS.items():
        strings.check(message)  # builds and caches the plan
        best = min(timeit.repeat(partial(strings.check, message), number=CALLS, repeat=5))
        print(f"{name:<50} {best / CALLS * 1e9:8.0f} ns")


if __name__ == "__main__":
    main()
