"""Without an exporter a server records no span but still continues each caller's trace:
its handler (and so its log lines, outgoing calls and outbox rows) runs under a span
context of its own in the caller's trace, or in a new trace, and only during that RPC."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from shop.product.v1 import product_pb2, product_pb2_grpc

from services.kit import tracing
from services.kit.server import Registration, create_server

SERVICE = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name


class TraceEcho(product_pb2_grpc.ProductServiceServicer):
    """Answers GetProduct with the trace and span ids its handler runs under."""

    async def GetProduct(self, request: Any, context: Any) -> product_pb2.Product:
        await asyncio.sleep(0.01)  # overlapping calls
        trace_id, span_id = tracing.current_ids()
        return product_pb2.Product(id=f"{trace_id}/{span_id}", name=request.id)


@pytest.fixture
async def stub() -> AsyncIterator[product_pb2_grpc.ProductServiceStub]:
    assert not tracing.exporting()

    def add(server: grpc.aio.Server) -> None:
        product_pb2_grpc.add_ProductServiceServicer_to_server(TraceEcho(), server)  # type: ignore[no-untyped-call]

    server, port, _ = await create_server([Registration(SERVICE, add)])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]
    await server.stop(0)


async def _ids(stub: product_pb2_grpc.ProductServiceStub, traceparent: str | None) -> str:
    metadata = [("x-tenant-id", "t1")] + ([("traceparent", traceparent)] if traceparent else [])
    reply = await stub.GetProduct(product_pb2.GetProductRequest(id="p"), metadata=metadata)
    return str(reply.id)


async def test_each_handler_runs_in_its_callers_trace_and_no_other(
    stub: product_pb2_grpc.ProductServiceStub,
) -> None:
    callers = [(uuid.uuid4().hex, uuid.uuid4().hex[:16]) for _ in range(5)]
    parents = [f"00-{trace_id}-{span_id}-01" for trace_id, span_id in callers]
    answers = [a.split("/") for a in await asyncio.gather(*(_ids(stub, p) for p in parents))]
    assert [trace_id for trace_id, _ in answers] == [trace_id for trace_id, _ in callers]
    # Each handler has a span id of its own, a child's, not the caller's.
    assert all(len(own) == 16 for _, own in answers)
    assert not {own for _, own in answers} & {span_id for _, span_id in callers}
    # A call without a traceparent starts a trace of its own, none of theirs.
    alone, own = (await _ids(stub, None)).split("/")
    assert len(alone) == 32
    assert len(own) == 16
    assert alone not in {trace_id for trace_id, _ in callers}
