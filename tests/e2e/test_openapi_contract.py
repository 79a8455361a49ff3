"""Every operation of the OpenAPI documents, fuzzed through the edge by schemathesis.

Each real response, errors included, must be what the documents say: no 5xx, a declared
status, content type and headers, a body that matches its schema. Requests carry a
customer's token, or the tenant admin's for admin operations. Bounded in time: a few
generated examples per operation (positive and negative), and a wall-clock budget per
operation, so the whole run takes a minute or two. A failure names the operation (in
the test id) and the check that failed, with the request to reproduce it.
CONTRACT_MAX_EXAMPLES and CONTRACT_OPERATION_BUDGET_S (seconds) change the bounds.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from services.launcher.platform import State
from tests import identity
from tests.contract.openapi import CHECKS, SCHEMAS

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "40"))
BUDGET_S = float(os.environ.get("CONTRACT_OPERATION_BUDGET_S", "10"))
_started: dict[str, float] = {}
_sent: Counter[str] = Counter()  # requests by operation, then by status class


class Tokens:
    """One customer and the admin of one tenant, logged in through the edge."""

    def __init__(self, http: httpx.Client, platform: State) -> None:
        tenant = f"t-contract-{os.getpid()}"
        self.customer = identity.customer(http, tenant)
        self.admin = identity.admin(http, platform, tenant)

    def for_operation(self, operation: dict[str, Any]) -> dict[str, str]:
        account = self.admin if operation.get("x-shop-access") == "admin" else self.customer
        return {"Authorization": f"Bearer {account.token}"}


@pytest.fixture(scope="module")
def tokens(http: httpx.Client, platform: State, request: pytest.FixtureRequest) -> Iterator[Tokens]:
    yield Tokens(http, platform)
    # The run's totals, for the record (printed even when the output is captured).
    operations = [k for k in _sent if k.startswith(("GET", "POST", "PUT", "PATCH", "DELETE"))]
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(_sent.items()) if k[0].isdigit())
    line = f"schemathesis: {len(operations)} operations, {sum(_sent[o] for o in operations)}"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{line} requests ({statuses})")


@schemathesis.pytest.parametrize(**SCHEMAS)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # Explicit: the coverage phase's boundary and negative values; generate: random ones.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_response_matches_the_documents(
    case: schemathesis.Case, platform: State, tokens: Tokens
) -> None:
    label = case.operation.label
    started = _started.setdefault(label, time.monotonic())
    if time.monotonic() - started > BUDGET_S:
        return  # this operation's time is up: the remaining examples are not sent
    response = case.call(
        base_url=platform.rest_url,
        headers=tokens.for_operation(case.operation.definition.raw),
        timeout=10,
    )
    _sent.update([label, f"{response.status_code // 100}xx"])
    case.validate_response(response, checks=CHECKS)
