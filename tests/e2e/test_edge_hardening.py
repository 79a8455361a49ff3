"""The edge holds its ground: what gRPC cannot carry, oversize and slow requests, and logs.

Requests go over raw sockets where an HTTP client would refuse to send them
(a non-UTF-8 header value, a body that never ends). Slow clients and the
connection cap are tried against an Envoy of this module with short timeouts
and a small cap, in front of the session platform's services.
"""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from shop.order.v1 import order_pb2, order_pb2_grpc

from services.launcher.edge_capacity import MAX_REQUEST_HEADERS_KB, EdgeCapacity
from services.launcher.platform import State
from tests import identity
from tests.e2e.conftest import assert_error
from tests.edges import Edge, running_edge

pytestmark = pytest.mark.e2e

# HTTP allows these in a header name; gRPC metadata does not.
NOT_GRPC = "!#$%&'*+^`|~"


def _address(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


def _raw(target: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange (the request says Connection: close): status, headers, body."""
    with socket.create_connection(_address(target), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _get(path: str, *headers: bytes) -> bytes:
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: shop", *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _post(path: str, body: bytes, *headers: bytes) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1".encode(),
        b"Host: shop",
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        *headers,
        b"Connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _error(body: bytes) -> dict[str, object]:
    document: dict[str, object] = json.loads(body)
    assert set(document) == {"code", "message", "details"}, document
    return document


def _log(platform: State, name: str) -> str:
    return (Path(platform.logs_dir) / f"{name}.log").read_text(errors="replace")


def _logged(platform: State, name: str, marker: str, timeout: float = 15) -> list[str]:
    """The lines of a log naming `marker`, once there is one (Envoy flushes its log late)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in _log(platform, name).splitlines() if marker in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_header_names_grpc_cannot_carry_are_dropped(platform: State, tenant: str) -> None:
    tenant_header = f"X-Tenant-Id: {tenant}".encode()
    for char in NOT_GRPC:
        name = f"A{char}b".encode()
        status, _, body = _raw(platform.grpc_target, _get("/v1/products", tenant_header,
                                                          name + b": 1"))  # fmt: skip
        assert status == 200, f"{char!r}: {status} {body[:200]!r}"
        # Anonymous and on a route that needs a token: the usual 401, not a 500.
        status, _, body = _raw(platform.grpc_target, _get("/v1/orders", name + b": 1"))
        assert status == 401, f"{char!r}: {status} {body[:200]!r}"


def test_a_header_value_that_is_not_utf8_is_one_400_and_one_log_line(
    platform: State, tenant: str
) -> None:
    marker = uuid.uuid4().hex
    before = _log(platform, "product").count("Invalid encoding")
    status, _, body = _raw(
        platform.grpc_target,
        _get("/v1/products", f"X-Tenant-Id: {tenant}".encode(), b"X-Note: a\xffb",
             f"X-Request-Id: {marker}".encode()),
    )  # fmt: skip
    assert status == 400
    assert _error(body)["code"] == "invalid_argument"
    assert "UTF-8" in str(json.loads(body)["message"])
    # Valid UTF-8 passes.
    ok = _raw(platform.grpc_target, _get("/v1/products", f"X-Tenant-Id: {tenant}".encode(),
                                         "X-Note: café".encode()))  # fmt: skip
    assert ok[0] == 200
    assert len(_logged(platform, "envoy", marker)) == 1
    assert _log(platform, "product").count("Invalid encoding") == before


def test_headers_up_to_the_edge_limit_pass_and_larger_ones_are_a_431(
    platform: State, http: httpx.Client, tenant: str
) -> None:
    # Above gRPC's default 8 KiB metadata limit (a 429 from the service before).
    within = http.get("/v1/products", headers={"X-Tenant-Id": tenant, "X-Note": "a" * 20000})
    assert within.status_code == 200, within.text
    over = "a" * (MAX_REQUEST_HEADERS_KB * 1024 + 1)
    refused = http.get("/v1/products", headers={"X-Tenant-Id": tenant, "X-Note": over})
    assert_error(refused, 431, "invalid_argument")
    assert "ratelimit" not in refused.headers
    # Native gRPC callers get the same room.
    account = identity.customer(http, tenant)
    with grpc.insecure_channel(platform.grpc_target) as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        metadata = [("authorization", f"Bearer {account.token}"), ("x-note", "a" * 20000)]
        orders.ListOrders(order_pb2.ListOrdersRequest(), metadata=metadata, timeout=5)


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"email": "a@example.com"}',
        b'{"email": "a\x00b',
        b'{"email": 5, "\x01\x7f": 1}',
    ],
    ids=["bom", "nul", "controls"],
)
def test_envoys_error_messages_never_echo_raw_request_bytes(
    platform: State, tenant: str, body: bytes
) -> None:
    status, _, answer = _raw(platform.grpc_target,
                             _post("/v1/auth/login", body, f"X-Tenant-Id: {tenant}".encode()))  # fmt: skip
    assert status == 400
    message = str(_error(answer)["message"])
    assert message
    assert all(32 <= ord(c) < 127 for c in message), message
    assert b"\\u" not in answer.split(b'"message"')[1], answer


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(
    platform: State, http: httpx.Client, tenant: str, scheme: str
) -> None:
    account = identity.customer(http, tenant)
    response = http.get("/v1/orders", headers={"Authorization": f"{scheme} {account.token}"})
    assert response.status_code == 200, response.text
    with grpc.insecure_channel(platform.grpc_target) as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        metadata = [("authorization", f"{scheme} {account.token}")]
        orders.ListOrders(order_pb2.ListOrdersRequest(), metadata=metadata, timeout=5)


def test_rbac_still_forbids_a_customer_an_admin_method(http: httpx.Client, tenant: str) -> None:
    account = identity.customer(http, tenant)
    denied = http.get("/v1/admin/users", headers=account.headers())
    assert_error(denied, 403, "permission_denied")


def test_the_access_log_leaves_out_the_query(platform: State, http: httpx.Client) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    marker = uuid.uuid4().hex
    http.get(f"/v1/products?access_token={secret}&q=1", headers={"X-Request-Id": marker})
    lines = _logged(platform, "envoy", marker)
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["path"] == "/v1/products"
    assert secret not in _log(platform, "envoy")


def test_the_overload_manager_watches_heap_and_connections(platform: State) -> None:
    stats = httpx.get(f"{platform.envoy_admin_url}/stats?filter=^overload\\.").text
    assert "overload.envoy.overload_actions.stop_accepting_requests.active: 0" in stats
    assert "overload.envoy.resource_monitors.fixed_heap.pressure" in stats


# --- slow clients and the connection cap, against an Envoy of this module ----------------

SHORT = EdgeCapacity(request_headers_timeout_s=2, request_timeout_s=3, max_connections=8)


@pytest.fixture(scope="module")
def short_edge(platform: State) -> Iterator[Edge]:
    with running_edge(platform, Path(platform.run_dir) / "hardening", capacity=SHORT) as edge:
        yield edge


def _closed_within(socks: list[socket.socket], trickle: bytes, limit: float) -> list[float]:
    """Trickle a byte to each socket every 0.25 s until the server closes it; seconds each
    stayed open (the limit for those still open)."""
    start, closed = time.monotonic(), [limit] * len(socks)
    open_ = set(range(len(socks)))
    while open_ and time.monotonic() - start < limit:
        readable, _, _ = select.select([socks[i] for i in open_], [], [], 0.25)
        for sock in readable:
            i = socks.index(sock)
            try:
                while sock.recv(65536):
                    pass
            except (ConnectionResetError, BlockingIOError, TimeoutError):
                pass
            closed[i] = time.monotonic() - start
            open_.discard(i)
        for i in list(open_):
            try:
                socks[i].sendall(trickle)
            except OSError:
                closed[i] = time.monotonic() - start
                open_.discard(i)
    return closed


def _connect(edge: Edge) -> socket.socket:
    sock = socket.create_connection(_address(edge.grpc_target), timeout=1)
    sock.settimeout(0.5)
    return sock


def test_slow_bodies_are_cut_off_after_the_request_timeout(short_edge: Edge) -> None:
    socks = [_connect(short_edge) for _ in range(4)]
    try:
        for sock in socks:
            head = _post("/v1/auth/login", b"x" * 1000).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
            sock.sendall(head + b'{"email": ')
        closed = _closed_within(socks, b" ", limit=15)
    finally:
        for sock in socks:
            sock.close()
    assert all(2.5 <= seconds < 8 for seconds in closed), closed


def test_unfinished_headers_are_cut_off_after_the_header_timeout(short_edge: Edge) -> None:
    socks = [_connect(short_edge) for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n")
        closed = _closed_within(socks, b"X-A: b\r\n", limit=15)
    finally:
        for sock in socks:
            sock.close()
    assert all(1.5 <= seconds < 6 for seconds in closed), closed


def _served(sock: socket.socket) -> bool:
    """Whether the edge answers /healthz on this connection (keep-alive)."""
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n")
        return sock.recv(65536).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_connections_beyond_the_cap_are_refused(short_edge: Edge) -> None:
    socks: list[socket.socket] = []
    try:
        served = []
        for _ in range(SHORT.max_connections + 4):
            socks.append(_connect(short_edge))
            served.append(_served(socks[-1]))
        # Envoy's own JWKS fetch may hold one of the slots.
        assert SHORT.max_connections - 1 <= sum(served) <= SHORT.max_connections, served
        assert not any(served[SHORT.max_connections :]), served
        stats = httpx.get(f"{short_edge.admin_url}/stats?filter=global_cx_overflow").text
        assert any(int(line.rsplit(": ", 1)[1]) > 0 for line in stats.splitlines()), stats
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.5)
    with _connect(short_edge) as again:
        assert _served(again)
