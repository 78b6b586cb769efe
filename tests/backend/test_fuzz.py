"""A property-based run of every route of the OpenAPI document (schemathesis): no 5xx.

Each operation gets generated bodies, paths and queries (hypothesis, derandomised so the run
is reproducible), sent as a logged-in project admin. Event streams are left out: a stream of a
live job stays open by design; tests/backend covers them separately.
"""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

EXAMPLES_PER_OPERATION = 12


def test_no_route_answers_5xx(api: TestClient) -> None:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", api.app)
    headers = {"Authorization": api.headers["Authorization"]}
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/events") or operation.path.endswith("/logout"):
            continue
        tested += 1

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def probe(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:200]}"
                )

        probe()
    assert tested >= 30, "the OpenAPI document lists the API's routes"
    assert not failures, "\n".join(sorted(set(failures)))
