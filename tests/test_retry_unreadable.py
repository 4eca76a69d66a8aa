"""Retrying dead letters whose text is not a JSON record (SPEC §4): a malformed line stays malformed, retry
after retry, through the pipeline, the API and the command line; it never answers 500."""

import pytest

from app.pipeline import reprocess, run_file

from .pipeline_helpers import fetch

LINES = '{"key": "a", "name": "n", "value": 1, "ts": "2025-01-15T12:00:00"}\n{"key": "b", "name": \n'


@pytest.fixture
def malformed(conn, write) -> int:
    """The id of a `malformed_json` dead letter, from a JSON Lines file with a broken line."""
    summary = run_file(conn, write("broken.jsonl", LINES))
    assert (summary["inserted"], summary["rejected"]) == (1, 1)
    ((dl_id,),) = fetch(conn, "SELECT id FROM dead_letters WHERE error = 'malformed_json'")
    return dl_id


def letter(conn, dl_id):
    return fetch(conn, "SELECT status, error, attempts, raw, last_raw FROM dead_letters WHERE id = :id", id=dl_id)[0]


def test_a_malformed_dead_letter_retried_again_and_again_stays_malformed(conn, malformed):
    for attempt in (1, 2, 3):
        summary = reprocess(conn, [malformed])
        assert (summary["status"], summary["rejected"], summary["dead_letters"]) == ("succeeded", 1, 0)
        assert letter(conn, malformed) == ("open", "malformed_json", attempt, '{"key": "b", "name": ',
                                           '{"key": "b", "name": ')
    fixed = reprocess(conn, [malformed], edited={"key": "b", "name": "n", "value": 2, "ts": "2025-01-15T12:00:00"})
    assert (fixed["status"], fixed["inserted"]) == ("succeeded", 1)
    assert letter(conn, malformed).status == "resolved"


def test_the_api_retries_a_malformed_dead_letter_twice(client, conn, malformed):
    url = f"/api/dead-letters/{malformed}/reprocess"
    for attempt in (1, 2):
        response = client.post(url)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert body["run"]["rejected"] == 1
        assert (body["dead_letter"]["status"], body["dead_letter"]["error"], body["dead_letter"]["attempts"]) == (
            "open", "malformed_json", attempt)


def test_the_command_line_retries_a_malformed_dead_letter_twice(runner, conn, malformed):
    for attempt in (1, 2):
        result = runner.invoke(args=["etl", "reprocess", str(malformed)])
        assert result.exit_code == 0, result.output
        assert '"rejected": 1' in result.output
        assert letter(conn, malformed).attempts == attempt
