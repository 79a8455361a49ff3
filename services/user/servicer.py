"""gRPC adapter for users: metadata and protos in, use case call, protos out."""

from __future__ import annotations

from google.api import httpbody_pb2
from shop.user.v1 import user_pb2, user_pb2_grpc

from services.kit import calls, errors, identity
from services.kit.peer import client_address
from services.kit.wire import timestamp
from services.user.domain import NewUser, User, UserChanges, parse_id
from services.user.usecases import Users

Context = calls.Context
JWKS_CACHE = "public, max-age=300"


def to_proto(user: User) -> user_pb2.User:
    """The wire form of a user (never the password hash)."""
    return user_pb2.User(
        id=str(user.id),
        tenant_id=user.tenant_id,
        email=user.email,
        username=user.username,
        role=user.role,
        version=user.version,
        created_at=timestamp(user.created_at),
        updated_at=timestamp(user.updated_at),
    )


def _given(request: user_pb2.UpdateUserRequest, name: str) -> str | None:
    """An optional string field's value, or None when the client left it out."""
    return str(getattr(request, name)) if request.HasField(name) else None


class UserServicer(user_pb2_grpc.UserServiceServicer):
    """shop.user.v1.UserService over the Users use cases."""

    def __init__(self, users: Users) -> None:
        self._users = users

    async def Register(self, request: user_pb2.RegisterRequest, context: Context) -> user_pb2.User:
        tenant = identity.tenant(context)
        new = NewUser.parse(request.email, request.username, request.password)
        user = await self._users.register(tenant, new)
        await calls.send_headers(context, http_status=201, version=user.version)
        return to_proto(user)

    async def Login(
        self, request: user_pb2.LoginRequest, context: Context
    ) -> user_pb2.LoginResponse:
        tenant = identity.tenant(context)
        no_store = {"cache-control": "no-store"}
        try:
            done = await self._users.login(
                tenant,
                email=request.email,
                username=request.username,
                password=request.password,
                address=client_address(context),
            )
        except errors.RateLimited as limited:
            # Error metadata travels inside the status details, which the edge
            # turns into the JSON body; a Retry-After header must be sent as
            # initial metadata, which Envoy passes on as response headers.
            await calls.send_headers(context, extra={**no_store, **limited.metadata})
            raise
        await calls.send_headers(context, extra=no_store)
        return user_pb2.LoginResponse(
            access_token=done.token.token,
            token_type="Bearer",
            expires_in=done.token.expires_in,
            user=to_proto(done.user),
        )

    async def GetMe(self, request: user_pb2.GetMeRequest, context: Context) -> user_pb2.User:
        user = await self._users.get_me(identity.tenant(context), identity.of(context))
        await calls.send_headers(context, version=user.version)
        return to_proto(user)

    async def GetUser(self, request: user_pb2.GetUserRequest, context: Context) -> user_pb2.User:
        tenant, caller = identity.tenant(context), identity.of(context)
        user = await self._users.get(tenant, caller, parse_id(request.id))
        await calls.send_headers(context, version=user.version)
        return to_proto(user)

    async def UpdateUser(
        self, request: user_pb2.UpdateUserRequest, context: Context
    ) -> user_pb2.User:
        tenant, caller = identity.tenant(context), identity.of(context)
        user_id = parse_id(request.id)
        expected = calls.require_if_match(context)
        changes = UserChanges.parse(
            email=_given(request, "email"),
            username=_given(request, "username"),
            password=_given(request, "password"),
            current_password=_given(request, "current_password"),
            role=_given(request, "role"),
        )
        user = await self._users.update(
            tenant, caller, user_id, expected, changes, client_address(context)
        )
        await calls.send_headers(context, version=user.version)
        return to_proto(user)

    async def ListUsers(
        self, request: user_pb2.ListUsersRequest, context: Context
    ) -> user_pb2.ListUsersResponse:
        page = await self._users.list(identity.tenant(context), request.limit, request.cursor)
        response = user_pb2.ListUsersResponse(items=[to_proto(u) for u in page.items])
        if page.next_cursor is not None:
            response.next_cursor = page.next_cursor
        return response

    async def GetJwks(
        self, request: user_pb2.GetJwksRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        await calls.send_headers(context, extra={"cache-control": JWKS_CACHE})
        return httpbody_pb2.HttpBody(content_type="application/json", data=self._users.jwks())
