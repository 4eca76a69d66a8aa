"""Property-based fuzzing of the whole JSON API from its own OpenAPI document (schemathesis).

Every operation gets generated requests that fit the document (positive) and requests that break it
(negative), then the operations are chained by the document's OpenAPI links (stateful). No answer may
be a server error, and every answer must match the document: status code, content type, headers and
body schema; a request that breaks the document must be refused with a 4xx, and one that fits it must
not be refused as malformed (400, 413, 415).

Six refusals of well-formed requests are part of the contract, and the document says so: a cursor
that fits its pattern but was not written by this API (400 `bad_cursor`: a cursor is opaque), 422
where the document lists it (a watermark in the future, edited JSON text that is not JSON, a shape
that breaks the rules beyond its schema), an upload whose bytes do not start like JSON, JSON Lines or
gzip (415 `not_json`), and a sort, search or error code that the named dataset's shape does not have
(400: each dataset has its own fields and codes), an audit log time bound that fits its pattern on a
day the calendar does not have (400, `2025-04-31`), and a runs list whose `from` day is after its `to`
(400): no schema can say those.

Operations that create datasets (each a table) get fewer examples, so the test stays quick.

Every request is authenticated as a script is, with an administrator's API token (`Authorization:
Bearer …`), so the fuzzing reaches every operation's own checks rather than the sign-in guard.
"""
import re
import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance, use_after_free

from .conftest import PG_URL, SAMPLE_INPUT, SERIAL_TABLES, TABLES

pytestmark = pytest.mark.slow
MAX_EXAMPLES = 200  # per operation, positive and negative
DATASET_EXAMPLES = 50  # per operation that makes or changes a dataset (DDL)
DATASET_OPERATIONS = {"POST /api/datasets", "PATCH /api/datasets/{name}", "POST /api/datasets/{name}/archive",
                      "POST /api/datasets/propose"}
NOT_IN_DATASET = re.compile(r"not an error code of|sorts by|is not searchable in|has no searchable field"
                            r"|is not on the calendar|after it ends")
EXISTING_EXAMPLES = 100  # per operation, aimed at the sample's rows
STATEFUL_SCENARIOS = 200
HYPOTHESIS = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}


def valid_requests_are_accepted(ctx, response, case):
    """schemathesis' positive_data_acceptance, less the semantic refusals the module docstring names."""
    code = response.json()["error"]["code"] if response.status_code in (400, 415) else None
    if code == "bad_cursor" and (case.query or {}).get("cursor") is not None:
        return None
    if code in ("bad_parameter", "bad_request") and NOT_IN_DATASET.search(response.json()["error"]["message"]):
        return None
    if code == "not_json" or response.status_code == 422 and "422" in case.operation.definition.raw["responses"]:
        return None
    return positive_data_acceptance(ctx, response, case)


# DELETE /api/watermarks/{name} resets the watermark (its value becomes null, as the document says):
# the resource stays, so a GET after it answers 200 and is no use after free.
EXCLUDED = [positive_data_acceptance, use_after_free]
ADDITIONAL = [valid_requests_are_accepted]


def sample_data(app) -> None:
    """Empty the database (ids from 1 again, no dataset but events), then load the sample: runs, target rows,
    dead letters to find."""
    from app.extensions import db

    with app.app_context(), db.engine.begin() as conn:
        made = [name for (name,) in conn.exec_driver_sql("SELECT name FROM datasets WHERE name <> 'events'")]
        for name in made:  # names the registry checked: plain identifiers
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "ds_{name}"')
        conn.exec_driver_sql("DELETE FROM dataset_versions WHERE dataset <> 'events'")
        conn.exec_driver_sql("DELETE FROM datasets WHERE name <> 'events'")
        for table in TABLES:
            conn.exec_driver_sql(f"DELETE FROM {table}")
        if PG_URL:  # SQLite's rowids restart by themselves in empty tables
            for table in SERIAL_TABLES:
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 1, false)")
    svc = app.extensions["sluice_runs"]
    with open(SAMPLE_INPUT, "rb") as f:
        svc.submit(f, "sample.json", kind="api", options=None)
    svc.drain()


class Bearer:
    """The fuzzer's administrator token, made again when it is gone (the sample was loaded again, or a fuzzed
    `DELETE /api/tokens/{id}` revoked it)."""

    def __init__(self, app):
        from app.accounts.passwords import hash_password

        self.app, self.secret, self.password_hash = app, None, hash_password("fuzzer password, never used")

    def headers(self) -> dict:
        """The Authorization header of a token that works now."""
        from app.accounts.actor import Actor
        from app.accounts.tokens import authenticate_token, create_token
        from app.accounts.users import create_user, get_by_name
        from app.extensions import db

        with self.app.app_context(), db.engine.connect() as conn:
            if self.secret is None or authenticate_token(conn, self.secret) is None:
                actor = Actor(label="fuzzer")
                user = get_by_name(conn, "fuzzer") or create_user(conn, "fuzzer", "admin", actor,
                                                                  password_hash=self.password_hash)
                self.secret, _ = create_token(conn, user, "fuzzer", actor)
        return {"Authorization": f"Bearer {self.secret}"}


@pytest.fixture
def bearer(app):
    return Bearer(app)


@pytest.fixture
def api_schema(app, bearer):
    """The API's document, served by the app under test, with the sample loaded; every request it makes
    carries the fuzzer's token (schemathesis' own probes of the bearer scheme take it away)."""
    sample_data(app)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)

    @schema.auth(refresh_interval=None, retry_on=[])  # asked again each time: the token is checked then
    class Token:
        def get(self, case, context):
            return bearer.headers()["Authorization"]

        def set(self, case, data, context):
            case.headers = {**(case.headers or {}), "Authorization": data}

    return schema


def test_the_document_is_strict(api_schema):
    doc = api_schema.raw_schema
    assert doc["openapi"] == "3.1.0"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "default" not in op["responses"], f"{method} {path}"
            assert all(status.isdigit() for status in op["responses"])
            for status, response in op["responses"].items():  # every answer has its schema
                response = doc["components"]["responses"][response["$ref"].rpartition("/")[2]] \
                    if "$ref" in response else response
                assert all("schema" in media for media in response["content"].values()), f"{method} {path} {status}"
    links = {op["operationId"]: set(response.get("links", {}))
             for ops in doc["paths"].values() for op in ops.values() for response in op["responses"].values()
             if response.get("links")}
    assert {"get_run", "cancel_run", "retry_run"} <= links["create_run"]
    assert {"get_dead_letter", "discard_dead_letter", "reopen_dead_letter", "reprocess_dead_letter"} \
        <= links["list_dead_letters"]
    assert "get_watermark" in links["set_watermark"] and "get_watermark" in links["reset_watermark"]
    # Every operation is guarded (SPEC §11): it names the bearer scheme and its 401 and 403 answers.
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["security"] == [{"bearerAuth": []}], f"{method} {path}"
            assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"


# Random ids rarely name a stored row: the third pass aims at the sample's run, dead letter and key,
# so generated edits go through a real reprocess and generated queries through real rows.
EXISTING = {"run_id": 1, "dl_id": 2, "key": "evt-001", "name": "events_ts"}
EXISTING_DATASET = {"name": "events"}  # the `name` of /api/datasets/{name}


@pytest.mark.parametrize("mode, pinned", [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None),
                                          (GenerationMode.POSITIVE, EXISTING)],
                         ids=["positive", "negative", "existing"])
def test_api_answers_every_request_as_documented(api_schema, mode, pinned):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    paths = api_schema.raw_schema["paths"]
    assert {op.label for op in operations} == {f"{m.upper()} {p}" for p, ops in paths.items() for m in ops}
    started = time.monotonic()
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and not (operation.path_parameters or operation.query or operation.body):
            continue  # an operation that takes no input has no request that breaks the document
        known = {**pinned, **EXISTING_DATASET} if pinned and operation.path.startswith("/api/datasets") else pinned
        path_parameters = {p.name: known[p.name] for p in operation.path_parameters if p.name in known} \
            if pinned else None
        examples = EXISTING_EXAMPLES if pinned else MAX_EXAMPLES
        if operation.label in DATASET_OPERATIONS:
            examples = min(examples, DATASET_EXAMPLES)

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @settings(max_examples=examples, **HYPOTHESIS)
        def answers_as_documented(case):
            response = case.call_and_validate(excluded_checks=EXCLUDED, additional_checks=ADDITIONAL)
            assert response.status_code < 500
            if mode == GenerationMode.POSITIVE:  # negative cases include a broken Authorization header
                assert response.status_code != 401, "the fuzzer's token was refused"

        answers_as_documented()
    print(f"{mode.name.lower()}{' (existing)' if pinned else ''}: {len(operations)} operations × "
          f"{EXISTING_EXAMPLES if pinned else MAX_EXAMPLES} examples in {time.monotonic() - started:.1f} s")


def test_api_chains_operations_by_their_links(api_schema, app):
    succeeded = Counter()
    # Scenarios chain what succeeded: a generated, broken Authorization header (fuzzed above) would end one.
    api_schema.config.generation.update(with_security_parameters=False)

    # Dataset operations are fuzzed one by one above; in scenarios, making tables would crowd out the
    # chains of runs, dead letters and watermarks that this test is about, and so would reading the audit
    # log and making or revoking tokens (the accounts' operations, fuzzed one by one too).
    class Links(api_schema.exclude(path_regex="^/api/(datasets|audit|tokens)").as_state_machine()):
        def setup(self):
            # Every scenario starts from the same data, so that Hypothesis can replay and shrink one.
            sample_data(app)

        def before_call(self, case):
            # The scenarios' data is in events: a made-up dataset name answers 404 (fuzzed above), and
            # would keep the chains of ids from reaching anything.
            if case.query and "dataset" in case.query:
                case.query["dataset"] = "events"

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, excluded_checks=EXCLUDED, additional_checks=ADDITIONAL)
            assert response.status_code < 500
            if response.status_code < 300:
                succeeded[case.operation.definition.raw["operationId"]] += 1

    started = time.monotonic()
    # Derandomized: the same scenarios every run, so that the coverage asserted below is no matter of luck.
    Links.run(settings=settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=8, derandomize=True,
                                **HYPOTHESIS))
    print(f"stateful: {STATEFUL_SCENARIOS} scenarios in {time.monotonic() - started:.1f} s; 2xx: {succeeded}")
    # The links lead somewhere: ids taken from answers name real runs, dead letters and watermarks.
    assert {"get_run", "cancel_run", "get_dead_letter", "discard_dead_letter", "get_watermark",
            "reset_watermark"} <= set(succeeded)
