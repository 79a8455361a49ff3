"""User use cases: registration, login, profile reads and optimistic updates."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors
from services.kit.cursor import CursorCodec, Page, TimeIdPosition, page_size, time_id_page
from services.kit.identity import CUSTOMER, Identity
from services.user import repository
from services.user.domain import (
    NewUser,
    User,
    UserChanges,
    WrongPassword,
    caller_id,
    ensure_visible,
)
from services.user.identifiers import canonical
from services.user.passwords import PasswordHasher
from services.user.throttle import LoginThrottle
from services.user.tokens import IssuedToken, TokenIssuer

DEFAULT_PAGE = 20
MAX_PAGE = 100


@dataclass(frozen=True)
class LoggedIn:
    user: User
    token: IssuedToken


class Users:
    """The user use cases over one database, one throttle store and one key ring."""

    def __init__(
        self,
        engine: AsyncEngine,
        passwords: PasswordHasher,
        tokens: TokenIssuer,
        throttle: LoginThrottle,
        cursors: CursorCodec,
    ) -> None:
        self._engine = engine
        self._passwords = passwords
        self._tokens = tokens
        self._throttle = throttle
        self._cursors = cursors

    async def register(self, tenant: str, new: NewUser) -> User:
        """A new customer of the tenant; AlreadyRegistered if the email or username is taken."""
        password_hash = await self._passwords.hash(new.password)
        async with self._engine.begin() as conn:
            return await repository.insert(conn, tenant, new, password_hash, CUSTOMER)

    async def login(
        self, tenant: str, *, email: str, username: str, password: str, address: str
    ) -> LoggedIn:
        """A token for matching credentials; one answer for unknown user and wrong password.

        `address` is the client's, as the edge saw it: failures are throttled per
        account and per (account, address) pair (services.user.throttle)."""
        by_email = bool(email.strip())
        identifier = canonical(email if by_email else username)
        if not identifier:
            raise errors.InvalidArgument.field("email", "email or username is required")
        if not password:
            raise errors.InvalidArgument.field("password", "is required")
        async with db.reads(self._engine).connect() as conn:
            if by_email:
                user = await repository.find(conn, tenant, email=identifier)
            else:
                user = await repository.find(conn, tenant, username=identifier)
        # Email and username of one account share its counters; an unknown
        # identifier is counted under its own name, exactly like an account.
        account = str(user.id) if user is not None else f"unknown\0{identifier}"
        await self._throttle.admit(tenant, account, address)
        if user is None:
            await self._passwords.verify_dummy(password)
            matched = False
        else:
            matched = await self._passwords.verify(user.password_hash, password)
        if user is None or not matched:
            await self._throttle.record_failure(tenant, account, address)
            raise errors.Unauthenticated("invalid credentials")
        await self._throttle.clear(tenant, account, address)
        if self._passwords.needs_rehash(user.password_hash):
            new_hash = await self._passwords.hash(password)
            async with self._engine.begin() as conn:
                await repository.replace_hash(conn, user, new_hash)
        token = self._tokens.issue(str(user.id), user.tenant_id, user.role)
        return LoggedIn(user, token)

    async def get_me(self, tenant: str, caller: Identity) -> User:
        async with db.reads(self._engine).connect() as conn:
            return await repository.get(conn, tenant, caller_id(caller))

    async def get(self, tenant: str, caller: Identity, user_id: uuid.UUID) -> User:
        """The user, if the caller may see them; otherwise as if they did not exist."""
        ensure_visible(caller, user_id)
        async with db.reads(self._engine).connect() as conn:
            return await repository.get(conn, tenant, user_id)

    async def update(
        self,
        tenant: str,
        caller: Identity,
        user_id: uuid.UUID,
        expected_version: int,
        changes: UserChanges,
        address: str = "",
    ) -> User:
        """Apply the changes to the user at `expected_version`, by the rules of domain.User.

        A password change that must prove the current password is a login attempt
        on the account: it is throttled and counted like one, per account and per
        (account, `address`), so a stolen token cannot guess the password faster
        than the login form could."""
        # Read, verify and hash outside any transaction (hashing is slow); the
        # versioned UPDATE then refuses the write if anything landed meanwhile.
        before = await self.get(tenant, caller, user_id)
        before.check_version(expected_version)
        after = before.changed(caller, changes)
        if changes.password is not None:
            if before.proof_required(caller, changes):
                await self._prove_password(tenant, before, changes.current_password, address)
            after = replace(after, password_hash=await self._passwords.hash(changes.password))
        if after == before:
            return before
        async with self._engine.begin() as conn:
            return await repository.save(conn, before, after)

    async def _prove_password(
        self, tenant: str, user: User, given: str | None, address: str
    ) -> None:
        if given is None:
            raise WrongPassword()  # no guess was made: nothing to count
        account = str(user.id)
        await self._throttle.admit(tenant, account, address)
        if not await self._passwords.verify(user.password_hash, given):
            await self._throttle.record_failure(tenant, account, address)
            raise WrongPassword()
        await self._throttle.clear(tenant, account, address)

    async def list(self, tenant: str, limit: int, cursor: str) -> Page[User]:
        """One page oldest first; the cursor is bound to the tenant."""

        async def fetch(after: TimeIdPosition | None, n: int) -> list[User]:
            async with db.reads(self._engine).connect() as conn:
                return await repository.page(conn, tenant, n, after)

        size = page_size(limit, DEFAULT_PAGE, MAX_PAGE)
        return await time_id_page(self._cursors, f"users:{tenant}", cursor, size, fetch)

    def jwks(self) -> bytes:
        """The JWKS document of every published key."""
        return self._tokens.keyring.jwks()
