"""User rules without any server: validation, who sees whom, who changes what."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
import pytest

from services.kit import errors, status
from services.kit.identity import ADMIN, CUSTOMER, Identity
from services.user.domain import (
    AlreadyRegistered,
    NewUser,
    User,
    UserChanges,
    UserNotFound,
    WrongPassword,
    can_see,
    ensure_visible,
)

NOW = datetime(2026, 11, 21, tzinfo=UTC)
PASSWORD = "correct horse battery"


def _user(role: str = CUSTOMER, version: int = 1) -> User:
    return User(uuid.uuid4(), "t", "ann@example.com", "ann", role, version, NOW, NOW, "$argon2id$x")


def _as(user: User) -> Identity:
    return Identity(str(user.id), user.tenant_id, user.role)


def _admin() -> Identity:
    return Identity(str(uuid.uuid4()), "t", ADMIN)


def _violation(error: pytest.ExceptionInfo[errors.InvalidArgument]) -> str:
    return error.value.violations[0].field


def test_email_and_username_are_stored_trimmed_and_lowercased() -> None:
    new = NewUser.parse("  Ann.Lee@Example.COM ", "Ann_Lee-1.x", PASSWORD)
    assert (new.email, new.username) == ("ann.lee@example.com", "ann_lee-1.x")


@pytest.mark.parametrize(
    "email",
    ["", "ann", "ann@", "@example.com", "ann@example", "a b@example.com", "a@b@example.com",
     "a" * 250 + "@example.com"],
)  # fmt: skip
def test_a_bad_email_is_an_invalid_argument_naming_the_field(email: str) -> None:
    with pytest.raises(errors.InvalidArgument) as error:
        NewUser.parse(email, "ann", PASSWORD)
    assert _violation(error) == "email"


@pytest.mark.parametrize("username", ["", "ab", "a" * 33, "ann lee", "ann@x", "änn"])
def test_a_username_is_3_to_32_letters_digits_dot_underscore_or_dash(username: str) -> None:
    with pytest.raises(errors.InvalidArgument) as error:
        NewUser.parse("ann@example.com", username, PASSWORD)
    assert _violation(error) == "username"


def test_a_password_is_12_to_128_characters() -> None:
    for ok in ("x" * 12, "x" * 128, "ü" * 12):
        assert NewUser.parse("ann@example.com", "ann", ok).password == ok
    for bad in ("x" * 11, "x" * 129, ""):
        with pytest.raises(errors.InvalidArgument) as error:
            NewUser.parse("ann@example.com", "ann", bad)
        assert _violation(error) == "password"


def test_changes_are_validated_like_a_registration_and_a_role_must_be_known() -> None:
    changes = UserChanges.parse(
        email="NEW@Example.com", username=None, password=None, current_password=None, role=ADMIN
    )
    assert (changes.email, changes.username, changes.role) == ("new@example.com", None, ADMIN)
    with pytest.raises(errors.InvalidArgument) as error:
        UserChanges.parse(
            email=None, username=None, password=None, current_password=None, role="root"
        )
    assert _violation(error) == "role"
    assert PASSWORD not in repr(UserChanges(password=PASSWORD, current_password=PASSWORD))


def test_an_admin_or_the_user_themself_can_see_a_user_and_nobody_else() -> None:
    ann, bob = _user(), _user()
    assert can_see(_as(ann), ann.id)
    assert can_see(_admin(), ann.id)
    assert not can_see(_as(bob), ann.id)
    assert not can_see(Identity(None, "t", None), ann.id)


def test_a_customer_asking_about_someone_else_is_told_not_found() -> None:
    with pytest.raises(UserNotFound):
        ensure_visible(_as(_user()), _user().id)


def test_only_an_admin_changes_a_role() -> None:
    ann = _user()
    with pytest.raises(errors.PermissionDenied):
        ann.changed(_as(ann), UserChanges(role=ADMIN))
    # Sending the role one already has changes nothing, so it is not refused.
    assert ann.changed(_as(ann), UserChanges(role=CUSTOMER)) == ann
    assert ann.changed(_admin(), UserChanges(role=ADMIN)).role == ADMIN


def test_only_a_user_setting_their_own_password_must_prove_the_current_one() -> None:
    ann, admin = _user(), _user(ADMIN)
    change = UserChanges(password=PASSWORD)
    assert ann.proof_required(_as(ann), change)
    assert admin.proof_required(_as(admin), change)
    assert not ann.proof_required(_as(admin), change)
    assert not ann.proof_required(_as(ann), UserChanges(email="x@example.com"))


def test_the_version_check_names_the_current_version() -> None:
    _user(version=3).check_version(3)
    with pytest.raises(errors.StaleVersion) as error:
        _user(version=3).check_version(2)
    assert error.value.metadata == {"currentVersion": "3"}


def test_the_password_hash_never_shows_in_repr() -> None:
    assert "argon2" not in repr(_user())


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (UserNotFound(), grpc.StatusCode.NOT_FOUND, "not_found"),
        (AlreadyRegistered("email"), grpc.StatusCode.ALREADY_EXISTS, "conflict"),
        (errors.StaleVersion(2), grpc.StatusCode.ABORTED, "conflict"),
        (WrongPassword(), grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
    ],
)
def test_user_errors_map_to_the_contracts_codes(
    error: errors.PlatformError, code: grpc.StatusCode, reason: str
) -> None:
    assert (status.status_code_for(error), error.code) == (code, reason)
