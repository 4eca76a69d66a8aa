"""Property-based fuzzing of the whole JSON API from its own OpenAPI document (schemathesis).

Every operation of the document gets generated requests that fit it (positive) and requests that
break it (negative); no answer may be a server error, and every answer must match the document:
status code, content type, headers and body schema; invalid requests must be refused with a 4xx.
(schemathesis' lazy pytest fixture loader does not work with pytest 9, so the strategies of its
Python API are driven by Hypothesis directly.)
"""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from .conftest import SAMPLE_INPUT

pytestmark = pytest.mark.slow
MAX_EXAMPLES = 50  # per operation and pass: about 1.5 minutes for the whole API
# A cursor is opaque: any string fits its schema, but only one this API wrote is valid (400 otherwise).
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture
def api_schema(app):
    """The API's document, served by the app under test, with some data to find (runs, dead letters)."""
    svc = app.extensions["sluice_runs"]
    with open(SAMPLE_INPUT, "rb") as f:
        svc.submit(f, "sample.json", kind="api", options=None)
    svc.drain()
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


def _operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


# Random ids rarely name a stored row: a third pass aims at the sample's run, dead letter and key,
# so generated edits go through a real reprocess and generated queries through real rows.
EXISTING = {"run_id": 1, "dl_id": 2, "key": "evt-001", "name": "events_ts"}


@pytest.mark.parametrize("mode, pinned", [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None),
                                          (GenerationMode.POSITIVE, EXISTING)],
                         ids=["positive", "negative", "existing"])
def test_api_answers_every_request_as_documented(api_schema, mode, pinned):
    operations = _operations(api_schema)
    paths = api_schema.raw_schema["paths"]
    documented = {f"{method.upper()} {path}" for path, ops in paths.items() for method in ops}
    # schemathesis leaves out the operation that serves the document itself
    assert {op.label for op in operations} == documented - {"GET /api/openapi.json"}
    for operation in operations:
        path_parameters = {p.name: pinned[p.name] for p in operation.path_parameters} if pinned else None

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def answers_as_documented(case):
            response = case.call_and_validate(excluded_checks=EXCLUDED)
            assert response.status_code < 500

        answers_as_documented()
