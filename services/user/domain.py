"""Users: validation and who may see or change whom. Plain Python, no gRPC, no SQL.

A user belongs to one tenant and is seen only by that tenant's admins and by
themself; anyone else is told the user does not exist. Every change bumps
`version`, and a change names the version it expects (the optimistic lock).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.kit import errors, ids
from services.kit.identity import ROLES, Identity
from services.user.identifiers import normalize_email, normalize_username

MIN_PASSWORD, MAX_PASSWORD = 12, 128


class UserNotFound(errors.NotFound):
    def __init__(self) -> None:
        super().__init__("user not found")


class AlreadyRegistered(errors.AlreadyExists):
    """The email or username is taken in the tenant."""

    def __init__(self, field_name: str) -> None:
        super().__init__(f"{field_name} is already registered", metadata={"field": field_name})


class WrongPassword(errors.InvalidArgument):
    """A user changing their own password did not prove the current one.

    A 400 naming the field, not a 401: the access token is fine, and a 401
    would send a client off to log in again.
    """

    def __init__(self) -> None:
        description = "is missing or wrong"
        super().__init__(
            f"currentPassword: {description}",
            violations=(errors.FieldViolation("currentPassword", description),),
        )


def check_password(password: str) -> str:
    """A new password, if its length is acceptable."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise errors.InvalidArgument.field(
            "password", f"must be {MIN_PASSWORD}-{MAX_PASSWORD} characters"
        )
    return password


def check_role(role: str) -> str:
    """A role name, if the platform knows it."""
    if role not in ROLES:
        raise errors.InvalidArgument.field("role", f"must be one of {', '.join(ROLES)}")
    return role


def parse_id(raw: str) -> uuid.UUID:
    """A user id from a request; InvalidArgument unless it is a canonical UUID."""
    return ids.parse_uuid(raw)


def caller_id(caller: Identity) -> uuid.UUID:
    """The verified caller's own user id; Unauthenticated if the token names none."""
    try:
        return uuid.UUID(caller.user_id or "")
    except ValueError:
        raise errors.Unauthenticated("the access token names no user") from None


def can_see(caller: Identity, user_id: uuid.UUID) -> bool:
    """Whether the caller may see the user: an admin, or the user themself."""
    # Users are only ever looked up in the caller's own tenant, so an admin
    # here is always an admin of the user's tenant.
    if caller.is_admin:
        return True
    return caller.authenticated and caller_id(caller) == user_id


def ensure_visible(caller: Identity, user_id: uuid.UUID) -> None:
    """NotFound rather than PermissionDenied, so a customer learns nothing about others."""
    if not can_see(caller, user_id):
        raise UserNotFound()


@dataclass(frozen=True)
class NewUser:
    """A validated registration."""

    email: str
    username: str
    password: str

    @classmethod
    def parse(cls, email: str, username: str, password: str) -> NewUser:
        """A registration from raw input, normalised; InvalidArgument naming a bad field."""
        return cls(normalize_email(email), normalize_username(username), check_password(password))


@dataclass(frozen=True)
class UserChanges:
    """A validated update; None leaves a field as it is."""

    email: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    current_password: str | None = field(default=None, repr=False)
    role: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        email: str | None,
        username: str | None,
        password: str | None,
        current_password: str | None,
        role: str | None,
    ) -> UserChanges:
        """Changes from raw input, normalised; InvalidArgument naming a bad field."""
        return cls(
            email=None if email is None else normalize_email(email),
            username=None if username is None else normalize_username(username),
            password=None if password is None else check_password(password),
            current_password=current_password,
            role=None if role is None else check_role(role),
        )


@dataclass(frozen=True)
class User:
    """A user of one tenant; `password_hash` is an Argon2id PHC string, kept out of repr."""

    id: uuid.UUID
    tenant_id: str
    email: str
    username: str
    role: str
    version: int
    created_at: datetime
    updated_at: datetime
    password_hash: str = field(repr=False)

    def check_version(self, expected: int) -> None:
        """errors.StaleVersion unless `expected` is the stored version."""
        if expected != self.version:
            raise errors.StaleVersion(self.version)

    def proof_required(self, caller: Identity, changes: UserChanges) -> bool:
        """Whether the change needs the current password: a user setting their own."""
        return changes.password is not None and caller_id(caller) == self.id

    def changed(self, caller: Identity, changes: UserChanges) -> User:
        """The user with email, username and role changed (the service sets the hash)."""
        if changes.role is not None and changes.role != self.role and not caller.is_admin:
            raise errors.PermissionDenied("only an admin changes a role")
        return replace(
            self,
            email=changes.email or self.email,
            username=changes.username or self.username,
            role=changes.role or self.role,
        )
