"""The user service over native gRPC: a server on port 0, real PostgreSQL and Redis, no edge.

Identity metadata is set the way the edge sets it after checking a token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2, status_pb2
from shop.user.v1 import user_pb2, user_pb2_grpc

from services.kit.config import ServerConfig
from services.kit.errors import StaleVersion
from services.kit.server import create_server
from services.launcher import ROOT
from services.user import admin, repository
from services.user.bootstrap import UserApp, bootstrap
from services.user.config import Argon2Params, UserConfig
from services.user.throttle import SLOW_BASE_S
from services.user.tokens import generate_key

PASSWORD = "correct horse battery"
FAST = Argon2Params(time_cost=1, memory_kib=1024, parallelism=1)
MAX_FAILURES = 3
Metadata = tuple[tuple[str, str], ...]
Stub = user_pb2_grpc.UserServiceStub


@pytest.fixture(scope="module")
def config(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> UserConfig:
    keys = tmp_path_factory.mktemp("jwt-keys")
    generate_key(keys / "signing.pem")
    return UserConfig(
        server=ServerConfig(
            bind="127.0.0.1:0", log_level="WARNING", otlp_endpoint=None, shutdown_grace_s=1
        ),
        database_url=postgres_url,
        redis_url=redis_url,
        db_pool_size=2,
        cursor_secret=b"integration-test-cursor-secret",
        jwt_issuer="shop-platform",
        jwt_audience="shop-api",
        jwt_ttl_s=900,
        signing_keys=(keys / "signing.pem",),
        argon2=FAST,
        login_max_failures=MAX_FAILURES,
        login_failure_window_s=60,
    )


@pytest.fixture(scope="module")
async def app(config: UserConfig) -> AsyncIterator[UserApp]:
    built = bootstrap(config)
    yield built
    await built.close()


@pytest.fixture(scope="module")
async def stub(app: UserApp, config: UserConfig) -> AsyncIterator[Stub]:
    server, port, _health = await create_server(app.registrations, config.server.bind)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield user_pb2_grpc.UserServiceStub(channel)
    await server.stop(1)


def anonymous(tenant: str) -> Metadata:
    return (("x-requested-tenant-id", tenant),)


def caller(user: user_pb2.User, **extra: str) -> Metadata:
    signed_in = (
        ("x-user-id", user.id),
        ("x-tenant-id", user.tenant_id),
        ("x-user-role", user.role),
    )
    return (*signed_in, *((k.replace("_", "-"), v) for k, v in extra.items()))


def admin_of(tenant: str, **extra: str) -> Metadata:
    return caller(user_pb2.User(id=str(uuid.uuid4()), tenant_id=tenant, role="admin"), **extra)


def reason(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """The status code, ErrorInfo reason and ErrorInfo metadata of a failed call."""
    trailers = dict(error.trailing_metadata() or ())
    info = error_details_pb2.ErrorInfo()
    status_pb2.Status.FromString(trailers["grpc-status-details-bin"]).details[0].Unpack(info)
    return error.code(), info.reason, dict(info.metadata)


async def fails(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


async def register(stub: Stub, tenant: str, name: str, password: str = PASSWORD) -> user_pb2.User:
    request = user_pb2.RegisterRequest(
        email=f"{name}@example.com", username=name, password=password
    )
    user: user_pb2.User = await stub.Register(request, metadata=anonymous(tenant))
    return user


async def login(
    stub: Stub,
    tenant: str,
    name: str,
    password: str = PASSWORD,
    *,
    by_username: bool = False,
    forwarded_for: str | None = None,
) -> user_pb2.LoginResponse:
    """Log in by email (or username), from the address an edge would name in x-forwarded-for."""
    if by_username:
        request = user_pb2.LoginRequest(username=name, password=password)
    else:
        request = user_pb2.LoginRequest(email=f"{name}@example.com", password=password)
    metadata = anonymous(tenant)
    if forwarded_for is not None:
        metadata = (*metadata, ("x-forwarded-for", forwarded_for))
    response: user_pb2.LoginResponse = await stub.Login(request, metadata=metadata)
    return response


async def test_register_answers_201_with_the_etag_and_stores_lowercase(
    stub: Stub, tenant: str
) -> None:
    request = user_pb2.RegisterRequest(email="Ann@Example.COM", username="Ann", password=PASSWORD)
    call = stub.Register(request, metadata=anonymous(tenant))
    user = await call
    initial = dict(await call.initial_metadata())
    assert (initial["x-http-code"], initial["etag"]) == ("201", '"1"')
    assert (user.email, user.username, user.role, user.version, user.tenant_id) == (
        "ann@example.com", "ann", "customer", 1, tenant
    )  # fmt: skip


async def test_a_taken_email_or_username_is_a_conflict_whatever_its_case(
    stub: Stub, tenant: str
) -> None:
    await register(stub, tenant, "ann")
    for email, username, field in [("ANN@example.com", "other", "email"),
                                   ("other@example.com", "ANN", "username")]:  # fmt: skip
        request = user_pb2.RegisterRequest(email=email, username=username, password=PASSWORD)
        error = await fails(stub.Register(request, metadata=anonymous(tenant)))
        assert reason(error) == (grpc.StatusCode.ALREADY_EXISTS, "conflict", {"field": field})
        assert error.details() == f"{field} is already registered"
    await register(stub, f"{tenant}-other", "ann")  # another tenant's namespace is separate


async def test_a_bad_password_or_a_missing_tenant_is_an_invalid_argument(
    stub: Stub, tenant: str
) -> None:
    error = await fails(register(stub, tenant, "ann", password="short"))
    assert reason(error)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")
    assert (error.details() or "").startswith("password:")
    request = user_pb2.RegisterRequest(email="a@example.com", username="abc", password=PASSWORD)
    error = await fails(stub.Register(request))
    assert error.details() == "X-Tenant-Id: header is required"


async def test_login_issues_a_token_that_verifies_against_the_jwks(stub: Stub, tenant: str) -> None:
    ann = await register(stub, tenant, "ann")
    call = stub.Login(
        user_pb2.LoginRequest(username="ANN", password=PASSWORD), metadata=anonymous(tenant)
    )
    answer = await call
    assert dict(await call.initial_metadata())["cache-control"] == "no-store"
    assert (answer.token_type, answer.expires_in, answer.user) == ("Bearer", 900, ann)

    jwks_call = stub.GetJwks(user_pb2.GetJwksRequest())
    body = await jwks_call
    assert dict(await jwks_call.initial_metadata())["cache-control"] == "public, max-age=300"
    assert body.content_type == "application/json"
    kid = jwt.get_unverified_header(answer.access_token)["kid"]
    key = jwt.PyJWKSet.from_json(body.data.decode())[kid]
    claims = jwt.decode(
        answer.access_token, key, algorithms=["EdDSA"], audience="shop-api", issuer="shop-platform"
    )
    assert (claims["sub"], claims["tenant"], claims["role"]) == (ann.id, tenant, "customer")
    assert claims["exp"] - claims["iat"] == 900
    assert (await login(stub, tenant, "ann")).user.id == ann.id  # by email too


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    stub: Stub, tenant: str
) -> None:
    await register(stub, tenant, "ann")
    wrong = await fails(login(stub, tenant, "ann", password="wrong password!"))
    unknown = await fails(login(stub, tenant, "nobody"))
    assert (
        reason(wrong) == reason(unknown) == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", {})
    )
    assert wrong.details() == unknown.details() == "invalid credentials"


async def test_repeated_failures_are_throttled_for_that_user_only(stub: Stub, tenant: str) -> None:
    await register(stub, tenant, "ann")
    await register(stub, tenant, "bob")
    for _ in range(MAX_FAILURES):
        await fails(login(stub, tenant, "ann", password="wrong password!"))
    # Even the right password is refused now, before it is checked.
    error = await fails(login(stub, tenant, "ann"))
    code, why, details = reason(error)
    retry_after = dict(error.initial_metadata() or ())["retry-after"]
    assert (code, why) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
    assert details["retry-after"] == retry_after
    assert 0 < int(retry_after) <= 60
    assert (await login(stub, tenant, "bob")).user.username == "bob"


async def test_a_success_clears_the_failures(stub: Stub, tenant: str) -> None:
    await register(stub, tenant, "ann")
    for _ in range(2):
        for _ in range(MAX_FAILURES - 1):
            await fails(login(stub, tenant, "ann", password="wrong password!"))
        await login(stub, tenant, "ann")


async def test_failures_count_against_the_account_whichever_identifier_names_it(
    stub: Stub, tenant: str
) -> None:
    await register(stub, tenant, "ann")
    for _ in range(MAX_FAILURES):
        await fails(login(stub, tenant, "ann", password="wrong password!"))
    # The username (in fullwidth letters, even) names the same, throttled account.
    error = await fails(login(stub, tenant, "\uff21nn", by_username=True))
    assert reason(error)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")


async def test_an_unknown_identifier_is_throttled_like_an_account(stub: Stub, tenant: str) -> None:
    for _ in range(MAX_FAILURES):
        await fails(login(stub, tenant, "nobody"))
    error = await fails(login(stub, tenant, "nobody"))
    assert reason(error)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")


async def test_a_guesser_cannot_lock_the_owner_out_from_another_address(
    stub: Stub, tenant: str
) -> None:
    await register(stub, tenant, "ann")
    guesser, owner = "203.0.113.7", "198.51.100.2"
    for n in range(MAX_FAILURES):
        # What a client writes into X-Forwarded-For is not its address: the
        # edge appends the one it saw, and only that one counts.
        spoofed = f"10.0.0.{n}, {guesser}"
        await fails(login(stub, tenant, "ann", "wrong password!", forwarded_for=spoofed))
    error = await fails(login(stub, tenant, "ann", forwarded_for=f"10.9.9.9, {guesser}"))
    assert reason(error)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
    started = asyncio.get_running_loop().time()
    assert (await login(stub, tenant, "ann", forwarded_for=owner)).user.username == "ann"
    # Slowed, not blocked: the account's failures make every attempt on it wait.
    assert asyncio.get_running_loop().time() - started >= SLOW_BASE_S


async def test_get_me_needs_an_identity_and_returns_the_callers_profile(
    stub: Stub, tenant: str
) -> None:
    ann = await register(stub, tenant, "ann")
    call = stub.GetMe(user_pb2.GetMeRequest(), metadata=caller(ann))
    assert await call == ann
    assert dict(await call.initial_metadata())["etag"] == '"1"'
    error = await fails(stub.GetMe(user_pb2.GetMeRequest(), metadata=anonymous(tenant)))
    assert reason(error)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")


async def test_a_customer_cannot_see_others_and_an_admin_can(stub: Stub, tenant: str) -> None:
    ann, bob = await register(stub, tenant, "ann"), await register(stub, tenant, "bob")
    hidden = await fails(stub.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=caller(bob)))
    missing = await fails(
        stub.GetUser(user_pb2.GetUserRequest(id=str(uuid.uuid4())), metadata=admin_of(tenant))
    )
    assert reason(hidden) == reason(missing)
    assert hidden.details() == missing.details() == "user not found"
    call = stub.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=admin_of(tenant))
    assert await call == ann
    assert dict(await call.initial_metadata())["etag"] == '"1"'


async def test_an_update_needs_the_current_version_in_if_match(stub: Stub, tenant: str) -> None:
    ann = await register(stub, tenant, "ann")
    request = user_pb2.UpdateUserRequest(id=ann.id, username="annie")
    call = stub.UpdateUser(request, metadata=caller(ann, if_match='"1"'))
    updated = await call
    assert (updated.username, updated.version) == ("annie", 2)
    assert dict(await call.initial_metadata())["etag"] == '"2"'
    stale = await fails(stub.UpdateUser(request, metadata=caller(ann, if_match='"1"')))
    assert reason(stale) == (grpc.StatusCode.ABORTED, "conflict", {"currentVersion": "2"})
    missing = await fails(stub.UpdateUser(request, metadata=caller(ann)))
    assert reason(missing)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "precondition_required")
    taken = user_pb2.UpdateUserRequest(id=ann.id, email=(await register(stub, tenant, "bob")).email)
    error = await fails(stub.UpdateUser(taken, metadata=caller(ann, if_match="2")))
    assert reason(error) == (grpc.StatusCode.ALREADY_EXISTS, "conflict", {"field": "email"})


async def test_a_write_that_lost_a_race_is_a_conflict(
    app: UserApp, tenant: str, stub: Stub
) -> None:
    ann_id = uuid.UUID((await register(stub, tenant, "ann")).id)
    async with app.engine.begin() as conn:
        before = await repository.get(conn, tenant, ann_id)
        await repository.save(conn, before, dataclasses.replace(before, username="first"))
        with pytest.raises(StaleVersion):
            await repository.save(conn, before, dataclasses.replace(before, username="second"))


async def test_only_an_admin_changes_a_role(stub: Stub, tenant: str) -> None:
    ann = await register(stub, tenant, "ann")
    request = user_pb2.UpdateUserRequest(id=ann.id, role="admin")
    error = await fails(stub.UpdateUser(request, metadata=caller(ann, if_match="1")))
    assert reason(error)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "permission_denied")
    promoted = await stub.UpdateUser(request, metadata=admin_of(tenant, if_match="1"))
    assert promoted.role == "admin"


async def test_changing_ones_own_password_needs_the_current_one(stub: Stub, tenant: str) -> None:
    ann = await register(stub, tenant, "ann")
    new = "a brand new passphrase"
    for current in ({}, {"current_password": "wrong password!"}):
        request = user_pb2.UpdateUserRequest(id=ann.id, password=new, **current)
        error = await fails(stub.UpdateUser(request, metadata=caller(ann, if_match="1")))
        # 400 naming the field: the token is fine, a 401 would send the client to log in.
        assert reason(error)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")
        assert error.details() == "currentPassword: is missing or wrong"
    request = user_pb2.UpdateUserRequest(id=ann.id, password=new, current_password=PASSWORD)
    await stub.UpdateUser(request, metadata=caller(ann, if_match="1"))
    await fails(login(stub, tenant, "ann"))
    await login(stub, tenant, "ann", password=new)
    # An admin resets someone else's password without knowing it.
    reset = user_pb2.UpdateUserRequest(id=ann.id, password=PASSWORD)
    await stub.UpdateUser(reset, metadata=admin_of(tenant, if_match="2"))
    await login(stub, tenant, "ann")


async def test_an_admin_lists_the_tenants_users_oldest_first_by_cursor(
    stub: Stub, tenant: str
) -> None:
    made = [await register(stub, tenant, f"user{n}") for n in range(5)]
    seen: list[user_pb2.User] = []
    cursor = ""
    for _ in range(3):
        page = await stub.ListUsers(
            user_pb2.ListUsersRequest(limit=2, cursor=cursor), metadata=admin_of(tenant)
        )
        seen.extend(page.items)
        cursor = page.next_cursor
    assert [u.id for u in seen] == [u.id for u in made]
    assert not cursor
    first = await stub.ListUsers(user_pb2.ListUsersRequest(limit=2), metadata=admin_of(tenant))
    elsewhere = user_pb2.ListUsersRequest(limit=2, cursor=first.next_cursor)
    error = await fails(stub.ListUsers(elsewhere, metadata=admin_of(f"{tenant}-b")))
    assert reason(error)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")
    refused = await fails(stub.ListUsers(user_pb2.ListUsersRequest(), metadata=caller(made[0])))
    assert reason(refused)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "permission_denied")


async def test_an_admin_of_another_tenant_cannot_reach_a_user(stub: Stub, tenant: str) -> None:
    ann = await register(stub, tenant, "ann")
    other = admin_of(f"{tenant}-b", if_match="1")
    for call in (
        stub.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=other),
        stub.UpdateUser(user_pb2.UpdateUserRequest(id=ann.id, role="admin"), metadata=other),
    ):
        assert reason(await fails(call))[:2] == (grpc.StatusCode.NOT_FOUND, "not_found")
    mismatch = (*caller(ann), ("x-requested-tenant-id", f"{tenant}-b"))
    error = await fails(stub.GetMe(user_pb2.GetMeRequest(), metadata=mismatch))
    assert reason(error)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "permission_denied")


async def test_a_login_rehashes_a_password_stored_with_old_parameters(
    app: UserApp, config: UserConfig, stub: Stub, tenant: str
) -> None:
    ann = await register(stub, tenant, "ann")
    stronger = bootstrap(dataclasses.replace(config, argon2=dataclasses.replace(FAST, time_cost=2)))
    try:
        await stronger.users.login(
            tenant, email="ann@example.com", username="", password=PASSWORD, address="10.0.0.1"
        )
    finally:
        await stronger.close()
    async with app.engine.connect() as conn:
        stored = await repository.get(conn, tenant, uuid.UUID(ann.id))
    assert ",t=2," in stored.password_hash
    assert stored.version == 1  # an invisible change: the ETag stays valid
    await login(stub, tenant, "ann")


async def _admin_cli(database_url: str, stdin: str, *args: str, **env: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.user.admin", "create-admin", *args,
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
             "DATABASE_URL": database_url, "ARGON2_TIME_COST": "1",
             "ARGON2_MEMORY_KIB": "1024", **env},
    )  # fmt: skip
    out, err = await proc.communicate(stdin.encode())
    assert proc.returncode is not None
    return proc.returncode, (out or err).decode().strip()


async def test_the_admin_cli_creates_an_admin_who_can_log_in(
    postgres_url: str, stub: Stub, tenant: str
) -> None:
    args = ("--tenant", tenant, "--email", "Root@Example.com", "--username", "root")
    code, printed = await _admin_cli(postgres_url, "", *args, SHOP_ADMIN_PASSWORD=PASSWORD)
    assert code == 0, printed
    answer = await login(stub, tenant, "root")
    assert (answer.user.id, answer.user.role) == (printed, "admin")
    assert jwt.decode(answer.access_token, options={"verify_signature": False})["role"] == "admin"
    # Run again (password on stdin this time) it is the same user, with the new password.
    code, again = await _admin_cli(postgres_url, "another long password\n", *args)
    assert (code, again) == (0, printed)
    await login(stub, tenant, "root", password="another long password")


async def test_the_admin_cli_promotes_an_existing_customer(
    postgres_url: str, stub: Stub, tenant: str
) -> None:
    ann = await register(stub, tenant, "ann")
    args = ("--tenant", tenant, "--email", "ann@example.com", "--username", "ann")
    code, printed = await _admin_cli(postgres_url, f"{PASSWORD}\n", *args)
    assert (code, printed) == (0, ann.id)
    assert (await login(stub, tenant, "ann")).user.role == "admin"


def test_keygen_writes_an_owner_only_key(tmp_path: Path) -> None:
    assert admin.main(["keygen", str(tmp_path / "k" / "signing.pem")]) == 0
    assert (tmp_path / "k" / "signing.pem").stat().st_mode & 0o777 == 0o600
