"""Fuzz the feature server through its own OpenAPI document: schemathesis generates requests
for every operation (valid and invalid bodies), sent with a valid admin token over TCP. No
answer may be a 500, and every request leaves exactly one audit line. The examples are
derandomized (the same ones every run, so a CI failure reproduces); drop `derandomize` to
explore further."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.server_harness import Deployment, audit_lines

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 60


def test_no_generated_request_gets_a_500_or_goes_unaudited(deployment: Deployment) -> None:
    before = len(audit_lines(deployment))
    schema = schemathesis.openapi.from_url(deployment.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {deployment.tokens['admin']}"}
    sent: list[tuple[str, int]] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # every operation of the server's own schema loads

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            response = case.call(base_url=deployment.url, headers=headers)
            sent.append((operation.label, response.status_code))
            if response.status_code >= 500:
                failures.append(f"{operation.label} -> {response.status_code}: {case.body!r:.300}")

        call()
    print(f"{len(sent)} generated requests over {len({label for label, _ in sent})} operations; "
          f"statuses {sorted({status for _, status in sent})}")
    assert not failures, failures[:5]
    assert len(sent) >= 100
    lines = audit_lines(deployment)[before:]
    # /openapi.json was fetched once before generation and is audited too
    assert len(lines) == len(sent) + 1, "one audit line per request"
