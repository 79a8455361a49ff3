"""The inventory through Envoy: public stock reads, admin low-stock and restock, and
the internal ReservationService that the edge never routes."""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.launcher.platform import State, service_channel
from tests import identity
from tests.e2e.conftest import assert_error
from tests.upstream_admin import StubAdmin

pytestmark = pytest.mark.e2e


def _restock(
    http: httpx.Client, headers: dict[str, str], product: str, version: int, available: int
) -> httpx.Response:
    return http.put(
        f"/v1/admin/inventory/{product}",
        json={"available": available, "lowStockThreshold": 3},
        headers={**headers, "If-Match": f'"{version}"', "Idempotency-Key": uuid.uuid4().hex},
    )


def test_admins_restock_and_list_low_stock_and_anyone_reads_it(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant).headers()
    customer = identity.customer(http, tenant).headers()
    product = str(uuid.uuid4())

    never = http.get(f"/v1/inventory/{product}", headers={"X-Tenant-Id": tenant})
    assert never.status_code == 200, never.text
    assert (never.json()["available"], never.json()["version"]) == (0, 0)
    assert never.headers["etag"] == '"0"'
    assert_error(http.get(f"/v1/inventory/{product}"), 400, "invalid_argument")

    assert_error(_restock(http, customer, product, 0, 5), 403, "permission_denied")
    assert_error(_restock(http, {"X-Tenant-Id": tenant}, product, 0, 5), 401, "unauthenticated")
    created = _restock(http, admin, product, 0, 2)
    assert created.status_code == 200, created.text
    assert created.headers["etag"] == '"1"'
    assert created.json()["lowStockThreshold"] == 3
    assert_error(_restock(http, admin, product, 0, 9), 409, "conflict")

    read = http.get(f"/v1/inventory/{product}", headers={"X-Tenant-Id": tenant}).json()
    assert (read["productId"], read["available"], read["reserved"]) == (product, 2, 0)
    # The customer's token reads too; another tenant's stock is its own.
    assert http.get(f"/v1/inventory/{product}", headers=customer).json()["available"] == 2
    other = http.get(f"/v1/inventory/{product}", headers={"X-Tenant-Id": f"{tenant}-x"})
    assert other.json()["version"] == 0

    assert_error(http.get("/v1/admin/inventory/low-stock", headers=customer), 403,
                 "permission_denied")  # fmt: skip
    low = http.get("/v1/admin/inventory/low-stock", headers=admin)
    assert low.status_code == 200, low.text
    assert [item["productId"] for item in low.json()["items"]] == [product]


def test_the_reservation_service_is_not_reachable_through_the_edge(
    http: httpx.Client, platform: State, tenant: str
) -> None:
    admin = identity.admin(http, platform, tenant)
    with grpc.insecure_channel(platform.grpc_target) as channel:
        stub = inventory_pb2_grpc.ReservationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetReservation(
                inventory_pb2.GetReservationRequest(reservation_id=str(uuid.uuid4())),
                metadata=[("authorization", f"Bearer {admin.token}")],
                timeout=5,
            )
    assert raised.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
    refused = http.post(
        "/shop.inventory.v1.ReservationService/Reserve",
        content=b"\x00\x00\x00\x00\x00",
        headers={
            "content-type": "application/grpc",
            "te": "trailers",
            **admin.headers(),
        },
    )
    assert refused.status_code == 404 or refused.headers.get("grpc-status") == "12"
    # Direct on the service port, with a platform certificate, it answers.
    with service_channel(platform.target("inventory"), platform.client_tls) as channel:
        stub = inventory_pb2_grpc.ReservationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetReservation(
                inventory_pb2.GetReservationRequest(reservation_id=str(uuid.uuid4())),
                metadata=[
                    ("x-user-id", "service:e2e"),
                    ("x-user-role", "admin"),
                    ("x-tenant-id", tenant),
                ],
                timeout=5,
            )
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def test_the_demo_tenant_has_stock_from_the_warehouse(http: httpx.Client, platform: State) -> None:
    """The running service syncs the demo tenant at start; an admin can sync on demand."""
    demo = "demo"
    bottle = "405e1102-b4ff-40c3-aaeb-2b2daf8b75e9"  # SKU-0001 in stubs/data
    admin = identity.admin(http, platform, demo).headers()
    synced = http.post("/v1/admin/inventory/sync", json={}, headers=admin)
    assert synced.status_code == 200, synced.text
    assert synced.json()["products"] > 0
    warehouse = StubAdmin(platform.warehouse_url)
    units = warehouse.as_tenant(demo, "GET", "/stock/SKU-0001").json()["available"]
    stock = http.get(f"/v1/inventory/{bottle}", headers={"X-Tenant-Id": demo}).json()
    assert stock["available"] + stock["reserved"] == units
    assert stock["version"] >= 1
    customer = identity.customer(http, demo).headers()
    assert_error(
        http.post("/v1/admin/inventory/sync", json={}, headers=customer), 403, "permission_denied"
    )
