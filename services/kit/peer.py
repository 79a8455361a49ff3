"""The address of the client a request came from, as the edge saw it.

Envoy runs with `use_remote_address: true`: it APPENDS the TCP peer address
of the connection to `x-forwarded-for`, after whatever the client sent in
that header, so only the last entry is the edge's own observation; every
earlier one is the client's word. (`x-envoy-external-address` is no help:
Envoy sets it only for non-internal peers, and passes a client's copy on
from internal ones.) A call that did not come through the edge (an internal
caller on the service port, a test) has no such header and is known by its
own TCP peer.
"""

from __future__ import annotations

from typing import Any

import grpc

FORWARDED_FOR = "x-forwarded-for"


def client_address(ctx: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The client's IP address: the edge's entry in x-forwarded-for, else the gRPC peer."""
    forwarded = ""
    for key, value in ctx.invocation_metadata() or ():
        if key == FORWARDED_FOR and isinstance(value, str):
            forwarded = value  # the last header is the one the edge appended to
    edge_seen = forwarded.rpartition(",")[2].strip()
    return edge_seen or from_peer(ctx.peer() or "")


def from_peer(peer: str) -> str:
    """The IP address inside a gRPC peer string ("ipv4:1.2.3.4:5", "ipv6:[::1]:5")."""
    scheme, _, rest = peer.partition(":")
    if scheme == "ipv4":
        return rest.rpartition(":")[0]
    if scheme == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer
