"""The Envoy config of docker-compose.yml: envoy/edge.yaml rendered with container names.

`python -m services.launcher.compose` writes envoy/compose.yaml; a unit test fails when
that file differs from what `render_compose_edge()` returns.
"""

from __future__ import annotations

import dataclasses

from services.launcher import ROOT
from services.launcher.codegen import DESCRIPTOR_PATH
from services.launcher.edge import LUA, EdgeSettings, render
from services.launcher.edge_routes import Endpoint

OUTPUT = ROOT / "envoy" / "compose.yaml"

# Inside the envoy container: docker-compose.yml mounts the files at these paths and
# publishes the edge port; the admin interface stays inside the container.
SETTINGS = EdgeSettings(
    edge_address="0.0.0.0",
    edge_port=8080,
    admin_address="127.0.0.1",
    admin_port=9901,
    upstreams={
        "order": Endpoint("order", 50051),
        "product": Endpoint("product", 50052),
        "user": Endpoint("user", 50053),
        "ratelimit": Endpoint("ratelimit", 50054),
        "event": Endpoint("event", 50055),
    },
    descriptor_path="/etc/shop/descriptor.binpb",
    lua_path="/etc/shop/edge.lua",
    # The container mounts neither gen/openapi nor Swagger UI's assets.
    docs=None,
)

HEADER = """\
# GENERATED from envoy/edge.yaml by services/launcher/compose.py: do not edit.
# Regenerate: PYTHONPATH=.:gen .venv/bin/python -m services.launcher.compose
"""


def render_compose_edge(settings: EdgeSettings = SETTINGS) -> str:
    """The compose Envoy config (other settings only for tests, e.g. local file paths)."""
    return HEADER + render(settings)


def settings_here(
    edge_port: int = SETTINGS.edge_port, admin_port: int = SETTINGS.admin_port
) -> EdgeSettings:
    """The compose settings with this checkout's files for the container mounts (to run
    or validate the compose config outside a container)."""
    return dataclasses.replace(
        SETTINGS,
        edge_port=edge_port,
        admin_port=admin_port,
        descriptor_path=str(DESCRIPTOR_PATH),
        lua_path=str(LUA),
    )


def main() -> None:
    OUTPUT.write_text(render_compose_edge())
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
