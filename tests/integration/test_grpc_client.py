"""The kit's gRPC client (`grpc_client.dial`) against a real server: what a unary call
carries (the caller's metadata, request id, trace context and deadline), how it is
counted, and that a failure comes back as the callee's status."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.kit import context, grpc_client, metrics
from services.kit.server import Registration, create_server
from tests import servers
from tests.scrapes import Samples, scrape, value
from tests.servers import ProbeMessage as Msg

SERVICE = "test.client.v1.Echo"
METHOD = f"/{SERVICE}/Get"
STREAM = f"/{SERVICE}/Watch"
CARRIED = ("x-tenant-id", "x-user-id", "x-request-id", "traceparent")


async def get(request: Msg, ctx: Any) -> Msg:
    """Answers with the metadata it got and the seconds the call had left, as JSON."""
    if request.id == "missing":
        await ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request.id == "slow":
        await asyncio.sleep(5)
    got = {k: v for k, v in ctx.invocation_metadata() if k in CARRIED}
    return Msg(id=json.dumps({"metadata": got, "time_remaining": ctx.time_remaining()}))


async def watch(request: Msg, ctx: Any) -> AsyncIterator[Msg]:
    yield Msg(id=request.id)
    yield Msg(id=request.id)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server, port, _ = await create_server(
        [Registration(SERVICE, servers.probe(SERVICE, get, watch), enforce_access=False)],
        "127.0.0.1:0",
    )
    async with grpc_client.dial(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(None)


def _echo(chan: grpc.aio.Channel) -> Any:
    return chan.unary_unary(METHOD, Msg.SerializeToString, Msg.FromString)


async def _samples() -> Samples:
    served = await metrics.serve("127.0.0.1:0")
    try:
        return await asyncio.to_thread(scrape, f"http://127.0.0.1:{served.port}/metrics")
    finally:
        await served.close()


def _handled(samples: Samples, code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": "Get", "grpc_type": "unary"}
    return value(samples, "grpc_client_handled_total", {**labels, "grpc_code": code})


async def test_a_call_carries_the_callers_metadata_request_id_and_trace(
    channel: grpc.aio.Channel,
) -> None:
    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    request_id = context.request_id.set("req-client-1")
    try:
        reply = await _echo(channel)(
            Msg(id="a"), metadata=(("x-tenant-id", "t1"), ("x-user-id", "u1"))
        )
    finally:
        context.request_id.reset(request_id)
        otel_context.detach(token)

    got = json.loads(reply.id)["metadata"]
    assert (got["x-tenant-id"], got["x-user-id"]) == ("t1", "u1")
    assert got["x-request-id"] == "req-client-1"
    version, sent_trace, _, flags = got["traceparent"].split("-")
    assert (version, sent_trace, flags) == ("00", f"{trace_id:032x}", "01")


async def test_a_call_outside_any_request_sends_no_request_id(
    channel: grpc.aio.Channel,
) -> None:
    reply = await _echo(channel)(Msg(id="a"), metadata=(("x-tenant-id", "t1"),))
    assert "x-request-id" not in json.loads(reply.id)["metadata"]


# The grpc-timeout header is rounded up to its unit, and the server starts its
# clock when the call arrives, so the deadline a server sees may run a little past
# the client's; the bound that matters is that it is the short one, not 30 s.
_WIRE_SLACK = 0.05


async def test_a_call_never_waits_past_the_callers_deadline(channel: grpc.aio.Channel) -> None:
    token = context.deadline.set(time.monotonic() + 0.5)
    try:
        reply = await _echo(channel)(Msg(id="a"), timeout=30)
        left = json.loads(reply.id)["time_remaining"]
        assert 0 < left <= 0.5 + _WIRE_SLACK
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await _echo(channel)(Msg(id="slow"), timeout=30)
    finally:
        context.deadline.reset(token)
    assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    # Its own timeout holds when it is the shorter one.
    reply = await _echo(channel)(Msg(id="a"), timeout=0.25)
    assert 0 < json.loads(reply.id)["time_remaining"] <= 0.25 + _WIRE_SLACK


async def test_calls_are_counted_by_their_status_and_a_failure_raises_it(
    channel: grpc.aio.Channel,
) -> None:
    before = await _samples()
    call = _echo(channel)
    await call(Msg(id="a"))
    await call(Msg(id="b"))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call(Msg(id="missing"))
    assert failed.value.code() is grpc.StatusCode.NOT_FOUND
    assert failed.value.details() == "no such thing"
    after = await _samples()
    assert _handled(after, "OK") - _handled(before, "OK") == 2
    assert _handled(after, "NOT_FOUND") - _handled(before, "NOT_FOUND") == 1
    labels = {"grpc_service": SERVICE, "grpc_method": "Get", "grpc_type": "unary"}
    started = value(after, "grpc_client_started_total", labels)
    assert started - value(before, "grpc_client_started_total", labels) == 3


async def test_a_cancelled_call_is_counted_as_cancelled(channel: grpc.aio.Channel) -> None:
    before = await _samples()
    pending = asyncio.ensure_future(_echo(channel)(Msg(id="slow")))
    await asyncio.sleep(0.2)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    after = await _samples()
    assert _handled(after, "CANCELLED") - _handled(before, "CANCELLED") == 1


async def test_streams_and_channel_state_are_the_channels_own(channel: grpc.aio.Channel) -> None:
    await channel.channel_ready()
    assert channel.get_state() is grpc.ChannelConnectivity.READY
    stream = channel.unary_stream(STREAM, Msg.SerializeToString, Msg.FromString)
    assert [m.id async for m in stream(Msg(id="s"))] == ["s", "s"]
