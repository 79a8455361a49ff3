"""The platform's HTTP JSON error as OpenAPI components, for tools/protoc_gen_openapi.py.

Every non-2xx answer, a transcoded service error and a reply Envoy makes itself alike,
is `{"code", "message", "details"}` where `details` is an array of google.rpc detail
objects in their proto3 JSON form: one ErrorInfo (domain `shop.platform` from a service,
`edge` from Envoy), then a BadRequest when fields were refused. The schemas say
exactly that (no other members), so a client may rely on the shape.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# buf runs the plugin as a script from tools/: the repository root holds the kit.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.kit.error_model import CODES

JSON = dict[str, Any]
# Every string `code` an error can carry, in the error model's order.
ERROR_CODES = list(CODES)
TYPE_PREFIX = "type.googleapis.com/"
ERROR_INFO = "google.rpc.ErrorInfo"
BAD_REQUEST = "google.rpc.BadRequest"


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _detail(name: str, description: str, properties: JSON, required: list[str]) -> JSON:
    return {
        "type": "object",
        "description": description,
        "properties": {"@type": {"const": TYPE_PREFIX + name}, **properties},
        "required": ["@type", *required],
        "additionalProperties": False,
    }


SCHEMAS: dict[str, JSON] = {
    "Error": {
        "type": "object",
        "description": "The platform's HTTP JSON error, from a service or from the edge.",
        "properties": {
            "code": {"type": "string", "enum": ERROR_CODES},
            "message": {"type": "string", "description": "What went wrong, for people."},
            "details": {
                "type": "array",
                "description": "google.rpc details: an ErrorInfo first, then a BadRequest"
                " when fields were refused; empty only when the gRPC runtime itself failed the"
                " call (a deadline, an unknown method), which carries no detail.",
                "items": {"oneOf": [_ref(ERROR_INFO), _ref(BAD_REQUEST)]},
            },
        },
        "required": ["code", "message", "details"],
        "additionalProperties": False,
    },
    ERROR_INFO: _detail(
        ERROR_INFO,
        "Why the request failed, in machine-readable words.",
        {
            "reason": {
                "type": "string",
                "description": "From a service: the error code again. From the edge: Envoy's"
                " response code details (e.g. `jwt_authn_access_denied`).",
            },
            "domain": {
                "type": "string",
                "enum": ["shop.platform", "edge"],
                "description": "`shop.platform`: a service refused; `edge`: Envoy itself did.",
            },
            "metadata": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Facts about the failure, e.g. the current version on a conflict.",
            },
        },
        ["reason", "domain"],
    ),
    BAD_REQUEST: _detail(
        BAD_REQUEST,
        "The fields of the request that were refused.",
        {
            "fieldViolations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "field": {"type": "string", "description": "The field's JSON name."},
                        "description": {"type": "string"},
                        "reason": {"type": "string"},
                        "localizedMessage": {
                            "type": "object",
                            "properties": {
                                "locale": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                    "required": ["field", "description"],
                    "additionalProperties": False,
                },
            }
        },
        ["fieldViolations"],
    ),
}
ERROR_RESPONSE: JSON = {
    "description": "Error: {code, message, details}",
    "content": {"application/json": {"schema": _ref("Error")}},
}
