"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (Schemathesis),
on both databases: valid and invalid requests for every operation; no 5xx, and every
response matches the document (status, content type, headers, body schema)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import BACKENDS, on_postgres
from .http_server import database, serving

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 30  # per operation and generation mode


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_api_holds_to_its_openapi_document(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "postgres":
        on_postgres(request)
    with database(kind, tmp_path) as db, serving(db, tmp_path / "s.log", "--max-wait", "1") as s:
        schema = schemathesis.openapi.from_url(f"{s.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 16
        cases: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(max_examples=EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))  # fmt: skip
                @given(case=operation.as_strategy(generation_mode=mode))
                def fuzz(case: schemathesis.Case) -> None:
                    response = case.call(base_url=s.url, timeout=30)
                    cases[case.operation.label] += 1
                    statuses[response.status_code] += 1
                    case.validate_response(response, checks=CHECKS)

                try:
                    fuzz()
                except Unsatisfiable:  # nothing to make invalid (GET /v1/health)
                    assert mode is GenerationMode.NEGATIVE
        assert not [code for code in statuses if code >= 500], server_errors(s.log())
    total = sum(cases.values())
    with capsys.disabled():
        print(f"\nschemathesis ({kind}): {len(cases)} operations, {total} cases, "
              f"statuses {dict(sorted(statuses.items()))}")  # fmt: skip
    assert len(cases) == len(operations) and total >= len(operations) * EXAMPLES


def server_errors(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if "Error" in line)[-3000:]
