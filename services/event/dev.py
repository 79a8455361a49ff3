"""The event gateway's dev settings: a demo courier that may send webhooks for the demo
tenant, its secret generated once into the run directory's secrets.json."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from services.event.signatures import generate_secret
from services.kit.dev import DEMO_TENANT, stored_secret

COURIER = "courier"
SECRET_NAME = "webhook_secret"


def dev_env(run_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """WEBHOOK_SOURCES: the one given, or the demo courier with its stored secret."""
    if env.get("WEBHOOK_SOURCES"):
        return {"WEBHOOK_SOURCES": env["WEBHOOK_SOURCES"]}
    secret = stored_secret(run_dir, SECRET_NAME, generate_secret)
    sources = {COURIER: {"tenant": DEMO_TENANT, "secrets": [secret]}}
    return {"WEBHOOK_SOURCES": json.dumps(sources)}
