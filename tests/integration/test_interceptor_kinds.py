"""The kit's interceptor around all four gRPC handler kinds, on a real server on port 0.

A tiny servicer (no contract of its own: a generic handler over a shop.* message,
so the string rules apply) answers unary, server-streaming, client-streaming and
bidi calls; every kind must get the access check, the request context, the string
rules per message received, the error mapping with Retry-After, and the access log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from shop.api.v1 import access_pb2
from shop.order.v1.order_pb2 import GetOrderRequest as Msg

from services.kit import context, errors, status
from services.kit.interceptors import PlatformInterceptor

SERVICE = "test.kinds.v1.Kinds"
KINDS = ("Unary", "ServerStream", "ClientStream", "Bidi")
CALLER = (("x-user-id", "u1"), ("x-tenant-id", "t1"), ("x-request-id", "req-42"))
seen: list[str] = []  # every message a handler received


def _answer(request: Msg) -> Msg:
    """The handlers' reply: the request id from the context and the message's id;
    some ids fail on purpose."""
    seen.append(request.id)
    if request.id == "limited":
        raise errors.RateLimited("slow down", metadata={errors.RETRY_AFTER: "7"})
    if request.id == "boom":
        raise RuntimeError("a bug with a secret in its message")
    return Msg(id=f"{context.request_id.get()}:{context.tenant_id.get()}:{request.id}")


async def unary(request: Msg, ctx: Any) -> Msg:
    return _answer(request)


async def server_stream(request: Msg, ctx: Any) -> AsyncIterator[Msg]:
    yield Msg(id="first")
    yield _answer(request)


async def client_stream(requests: AsyncIterator[Msg], ctx: Any) -> Msg:
    answers = [_answer(r).id async for r in requests]
    return Msg(id=",".join(answers))


async def bidi(requests: AsyncIterator[Msg], ctx: Any) -> AsyncIterator[Msg]:
    async for request in requests:
        yield _answer(request)


def _handlers() -> grpc.GenericRpcHandler:
    io: dict[str, Any] = {
        "request_deserializer": Msg.FromString,
        "response_serializer": Msg.SerializeToString,
    }
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, **io),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **io),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **io),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **io),
        },
    )


@pytest.fixture(scope="module")
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    access = {f"/{SERVICE}/{kind}": access_pb2.ACCESS_AUTHENTICATED for kind in KINDS}
    server = grpc.aio.server(interceptors=[PlatformInterceptor(access)])
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        await server.stop(1)


async def _call(
    channel: grpc.aio.Channel, kind: str, ids: list[str], metadata: Any = CALLER
) -> tuple[list[str], grpc.aio.Call]:
    """Send `ids` (one message for the unary-request kinds); the replies' ids and the call."""
    path, io = f"/{SERVICE}/{kind}", (Msg.SerializeToString, Msg.FromString)
    if kind == "Unary":
        call = channel.unary_unary(path, *io)(Msg(id=ids[0]), metadata=metadata)
        return [(await call).id], call
    if kind == "ServerStream":
        call = channel.unary_stream(path, *io)(Msg(id=ids[0]), metadata=metadata)
        return [reply.id async for reply in call], call
    requests = [Msg(id=i) for i in ids]
    if kind == "ClientStream":
        call = channel.stream_unary(path, *io)(iter(requests), metadata=metadata)
        return [(await call).id], call
    call = channel.stream_stream(path, *io)(iter(requests), metadata=metadata)
    return [reply.id async for reply in call], call


async def _failure(channel: grpc.aio.Channel, kind: str, ids: list[str], **kw: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _call(channel, kind, ids, **kw)
    return failed.value


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    trailers = dict(error.trailing_metadata() or ())
    rich = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    assert trailers[status.ERROR_CODE_KEY] == info.reason
    return info


@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_runs_in_the_callers_context(
    channel: grpc.aio.Channel, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="shop.rpc"):
        replies, call = await _call(channel, kind, ["a", "b"])
    one = ["req-42:t1:a"]
    expected = {"Unary": one, "ServerStream": ["first", *one], "Bidi": [*one, "req-42:t1:b"]}
    assert replies == expected.get(kind, ["req-42:t1:a,req-42:t1:b"])
    assert await call.code() is grpc.StatusCode.OK
    logged = [r for r in caplog.records if getattr(r, "rpc_method", None) == kind]
    assert [(r.rpc_service, r.status) for r in logged] == [(SERVICE, "OK")]  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_refuses_a_caller_without_a_token(
    channel: grpc.aio.Channel, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen.clear()
    with caplog.at_level(logging.INFO, logger="shop.rpc"):
        error = await _failure(channel, kind, ["a"], metadata=())
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert _error_info(error).reason == "unauthenticated"
    assert seen == []
    logged = [r for r in caplog.records if getattr(r, "rpc_method", None) == kind]
    assert [r.status for r in logged] == ["UNAUTHENTICATED"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_checks_each_request_message_against_the_string_rules(
    channel: grpc.aio.Channel, kind: str
) -> None:
    seen.clear()
    # Streams: the bad message is the second; the first was handled already.
    ids = ["bad\x00id"] if kind in ("Unary", "ServerStream") else ["ok", "bad\x00id", "after"]
    error = await _failure(channel, kind, ids)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _error_info(error).reason == "invalid_argument"
    assert not {"bad\x00id", "after"} & set(seen)


@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_maps_a_domain_error_and_sends_retry_after(
    channel: grpc.aio.Channel, kind: str
) -> None:
    error = await _failure(channel, kind, ["limited"])
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "slow down"
    info = _error_info(error)
    assert (info.reason, dict(info.metadata)) == ("rate_limited", {errors.RETRY_AFTER: "7"})
    if kind != "ServerStream":  # the stream's headers left with its first reply
        assert dict(error.initial_metadata() or ())[errors.RETRY_AFTER] == "7"


@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_hides_an_unexpected_failure_behind_internal(
    channel: grpc.aio.Channel, kind: str
) -> None:
    error = await _failure(channel, kind, ["boom"])
    assert error.code() is grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"
    assert _error_info(error).reason == "internal"
