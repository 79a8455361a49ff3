"""Pages the edge serves to people: an order's live status at `GET /orders/{id}/live`.

envoy/live.html is read when the config is rendered and served as an Envoy direct
response (edge_docs' mechanism: outside the transcoder, public in edge_policy's
EDGE_PATTERNS), so the container needs no extra file. The page holds no data: it
calls the API (`GET /v1/orders/{id}/watch`) with the token the user gives it.
Its one inline script is allowed by its SHA-256 in the Content-Security-Policy,
and nothing else: no other script, no other origin, no framing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from services.launcher import ROOT, edge_docs

LIVE_PAGE = ROOT / "envoy" / "live.html"
# The order id is checked by the API the page calls, not here.
LIVE_PATH = r"/orders/[^/]+/live/?"
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: str) -> str:
    """Only the page's own inline scripts (by hash) and calls to this origin."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def routes(live_page: Path = LIVE_PAGE) -> list[dict[str, Any]]:
    """The page routes, to be listed before the service routes."""
    html = live_page.read_text()
    route = edge_docs.direct("", "text/html; charset=utf-8", {"inline_string": html})
    route["match"] = {"safe_regex": {"regex": LIVE_PATH}}
    route["response_headers_to_add"] += [
        {"header": {"key": "content-security-policy", "value": content_security_policy(html)}},
        {"header": {"key": "cache-control", "value": "no-store"}},
        {"header": {"key": "referrer-policy", "value": "no-referrer"}},
    ]
    return [route]
