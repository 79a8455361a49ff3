"""The user service's dev settings: a token-signing key generated into the run directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from services.user.tokens import generate_key

SIGNING_KEY = Path("keys") / "jwt-signing.pem"


def dev_env(run_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """JWT_SIGNING_KEYS: the run directory's key, made on first start and kept."""
    path = run_dir / SIGNING_KEY
    if not path.exists():
        generate_key(path)
    return {"JWT_SIGNING_KEYS": str(path)}
