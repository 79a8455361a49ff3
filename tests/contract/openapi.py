"""The OpenAPI documents as schemathesis schemas, and the checks a real response must pass.

Shared by the fuzzing contract test and the tests of documented replies: one list of
checks, one way to validate a response that a test made itself.
"""

from __future__ import annotations

import httpx
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.launcher.edge_docs import DocsFiles

# What the documents promise about responses. Not positive_data_acceptance or
# negative_data_rejection: the documents do not carry the services' input rules (UUID
# ids, lengths, item shapes), so a refused "valid" request is no contract breach.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# By package with `_` for `.`: shop_order_v1, ...
SCHEMAS = {
    package.replace(".", "_"): schemathesis.openapi.from_path(path)
    for package, path in DocsFiles.here().documents().items()
}


def assert_documented(
    package: str, method: str, path: str, response: httpx.Response, **path_parameters: str
) -> None:
    """The response is what `package`'s document says `method path` answers (raises a
    schemathesis FailureGroup naming the failed checks otherwise)."""
    operation = SCHEMAS[package][path][method]
    case = operation.Case(path_parameters=path_parameters)
    case.validate_response(response, checks=CHECKS)
