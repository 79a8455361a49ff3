"""The API reference the edge serves itself: the OpenAPI documents and a Swagger UI page.

`GET /openapi/<package>.json` answers gen/openapi's document of that proto package and
`GET /docs` a page that renders every one of them with Swagger UI, whose assets come from
the `swagger-ui-py` wheel (installed with the Python packages, no CDN). All are Envoy
direct responses read from the files when Envoy loads its config, public (edge_policy's
EDGE_PREFIXES) and outside the transcoder, like /healthz.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.launcher import ROOT

OPENAPI_DIR = ROOT / "gen" / "openapi"
PAGE_PATHS = ("/docs", "/docs/")
DOCUMENT_PREFIX = "/openapi/"
ASSET_PREFIX = "/docs/assets/"
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
# Envoy refuses a direct response body above route_config's
# max_direct_response_body_size_bytes (envoy/edge.yaml): Swagger UI's bundle is ~1.5 MB.
MAX_BODY_BYTES = 4 * 1024 * 1024
TRANSCODER_OFF = {
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    }
}


def swagger_ui_assets() -> Path:
    """Swagger UI's static files in the installed swagger-ui-py wheel (not imported:
    its package pulls in web-framework handlers the edge does not need)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: run ./shop to install the packages")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@dataclass(frozen=True)
class DocsFiles:
    """Where the edge finds the documents and Swagger UI's assets."""

    openapi_dir: str
    assets_dir: str

    @classmethod
    def here(cls) -> DocsFiles:
        return cls(str(OPENAPI_DIR), str(swagger_ui_assets()))

    def documents(self) -> dict[str, Path]:
        """Each proto package's document: shop/order/v1/order.openapi.json is shop.order.v1."""
        root = Path(self.openapi_dir)
        found = {
            ".".join(path.relative_to(root).parent.parts): path
            for path in sorted(root.rglob("*.openapi.json"))
        }
        if not found:
            raise RuntimeError(f"no OpenAPI document under {root}: run ./shop generate")
        return found


def page(packages: list[str]) -> str:
    """The /docs page: one Swagger UI per document, so every service shows at once."""
    sections = "\n".join(
        f'<section><h2>{p}</h2><div id="{p.replace(".", "-")}"></div></section>' for p in packages
    )
    docs = json.dumps({p.replace(".", "-"): f"{DOCUMENT_PREFIX}{p}.json" for p in packages})
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Shop platform API reference</title>
<link rel="stylesheet" href="{ASSET_PREFIX}swagger-ui.css">
<style>body {{ margin: 0 2rem; font-family: sans-serif; }}</style>
</head>
<body>
<h1>Shop platform API reference</h1>
<p>The OpenAPI documents: {", ".join(f'<a href="{DOCUMENT_PREFIX}{p}.json">{p}</a>' for p in packages)}.</p>
{sections}
<script src="{ASSET_PREFIX}swagger-ui-bundle.js"></script>
<script>
for (const [id, url] of Object.entries({docs})) {{
  SwaggerUIBundle({{url, dom_id: "#" + id, docExpansion: "list", displayOperationId: true}});
}}
</script>
</body>
</html>
"""


def direct(path: str, content_type: str, body: dict[str, str]) -> dict[str, Any]:
    return {
        "match": {"path": path},
        "typed_per_filter_config": TRANSCODER_OFF,
        "direct_response": {"status": 200, "body": body},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": content_type}},
            {"header": {"key": "x-content-type-options", "value": "nosniff"}},
        ],
    }


def _file(path: str, content_type: str, file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise RuntimeError(f"{file} is missing: the edge cannot serve {path}")
    if file.stat().st_size > MAX_BODY_BYTES:
        raise RuntimeError(f"{file} is over the edge's {MAX_BODY_BYTES}-byte direct responses")
    return direct(path, content_type, {"filename": str(file)})


def routes(files: DocsFiles) -> list[dict[str, Any]]:
    """The docs routes, to be listed before the service routes."""
    documents = files.documents()
    html = page(list(documents))
    found = [direct(p, "text/html; charset=utf-8", {"inline_string": html}) for p in PAGE_PATHS]
    found += [
        _file(f"{DOCUMENT_PREFIX}{package}.json", "application/json", path)
        for package, path in documents.items()
    ]
    found += [
        _file(f"{ASSET_PREFIX}{name}", kind, Path(files.assets_dir) / name)
        for name, kind in ASSETS.items()
    ]
    return found
