"""Operator commands: create (or promote) an admin, and generate a signing key.

    python -m services.user.admin create-admin --tenant T --email E --username U
    python -m services.user.admin keygen PATH [--if-missing]

create-admin takes the password from SHOP_ADMIN_PASSWORD, else from stdin
(never from an argument, which `ps` and shell history would show), and reads
DATABASE_URL and ARGON2_* from the environment. Run again for an existing
email, it makes that user an admin with the given password: it is idempotent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from services.kit import db, errors, identity
from services.kit.config import ConfigError, env_str
from services.kit.identity import ADMIN
from services.user import repository
from services.user.config import Argon2Params
from services.user.domain import NewUser
from services.user.passwords import PasswordHasher
from services.user.tokens import generate_key


def _password(env: Mapping[str, str]) -> str:
    """The admin's password from SHOP_ADMIN_PASSWORD, else the first line of stdin."""
    given = env.get("SHOP_ADMIN_PASSWORD")
    if given:
        return given
    if sys.stdin.isatty():
        print("admin password: ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().rstrip("\r\n")


async def create_admin(
    env: Mapping[str, str], tenant: str, email: str, username: str, password: str
) -> str:
    """The id of the tenant's admin with this email, created or promoted; password set."""
    identity.valid_tenant(tenant, "tenant")
    new = NewUser.parse(email, username, password)
    password_hash = await PasswordHasher(Argon2Params.from_env(env)).hash(new.password)
    engine = db.create_engine(env_str(env, "DATABASE_URL"), pool_size=1)
    try:
        async with engine.begin() as conn:
            found = await repository.find(conn, tenant, email=new.email)
            if found is None:
                user = await repository.insert(conn, tenant, new, password_hash, ADMIN)
            else:
                if found.username != new.username:
                    print(
                        f"note: keeping the existing username {found.username!r}", file=sys.stderr
                    )
                promoted = replace(found, role=ADMIN, password_hash=password_hash)
                user = await repository.save(conn, found, promoted)
    finally:
        await engine.dispose()
    return str(user.id)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.user.admin")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-admin", help="create or promote a tenant admin")
    create.add_argument("--tenant", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--username", required=True)
    keygen = commands.add_parser("keygen", help="write a new Ed25519 signing key (mode 0600)")
    keygen.add_argument("path")
    keygen.add_argument(
        "--if-missing", action="store_true", help="keep an existing key (first start of a deploy)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            if args.if_missing and Path(args.path).exists():
                print(f"kept {args.path}")
                return 0
            print(f"wrote {args.path} (kid {generate_key(args.path)})")
            return 0
        user_id = asyncio.run(
            create_admin(env, args.tenant, args.email, args.username, _password(env))
        )
    except (errors.PlatformError, ConfigError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(user_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
