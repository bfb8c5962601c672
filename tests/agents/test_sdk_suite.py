"""The OpenAI Agents SDK's own session tests, run against ``TurnstoreSession`` with only the
session class swapped (``tests/agents_sdk``): every test that does not inspect the SDK
backend's own internals passes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from ..agents_sdk.run import SdistUnavailable, run
from ..agents_sdk.turnstore_sdk_swap import EXCLUDED
from ..conftest import PG_URL, on_postgres


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_sdks_own_session_tests_pass_against_turnstore_session(
    backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        if PG_URL == "skip":
            pytest.skip("STORE_PG_URL=skip: PostgreSQL tests not run")
        on_postgres(request)
    try:
        outcome = run(backend, PG_URL)
    except SdistUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    assert outcome.failed == [], outcome.output
    assert outcome.skipped == []
    assert outcome.passed
    # every exclusion names a test of these files (none is left over from another version)
    excluded = {nodeid.split("::")[-1].split("[")[0] for nodeid in outcome.excluded}
    assert excluded == {name for names in EXCLUDED.values() for name in names}
