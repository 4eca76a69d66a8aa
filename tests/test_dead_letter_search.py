"""Dead-letter search: text inside the raw record, the attempted edit and the detail; key prefix; counts that
follow the status and search; the next open one. Through the API (which passes the view to the queries)."""
import pytest

from app import queries

from .test_api import assert_error
from .test_pages_helpers import load

TS = "2025-02-01T00:00:00Z"
RECORDS = [
    {"key": "acct-1", "name": "Zebra crossing", "value": "x", "ts": TS},    # 1 invalid_value
    {"key": "acct-2", "name": "plain", "value": "y", "ts": TS},             # 2 invalid_value
    {"key": "user-1", "value": 1, "ts": TS, "note": "a zebra here too"},     # 3 missing_name
    {"key": "user-2", "name": "n", "value": 1, "ts": "yesterday"},            # 4 invalid_timestamp
    {"key": "acct-3", "name": "50%_off", "value": "z", "ts": TS},            # 5 invalid_value
]


@pytest.fixture(params=["few", "many"])
def letters(request, conn, write, monkeypatch):
    """The dead letters of RECORDS, written by a normal run; searched by FTS candidates or row by row."""
    if request.param == "many":  # every search counts as dense: the row-by-row plan on SQLite
        monkeypatch.setattr("app.queries.dead_letters.SPARSE_CAP", 1)
    summary = load(conn, write, RECORDS)
    assert summary["rejected"] == 5
    return summary


def _ids(client, query: str) -> list[int]:
    response = client.get(f"/api/dead-letters?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [d["id"] for d in response.get_json()["items"]]


def test_text_inside_raw_ignoring_case_and_combined_with_filters(client, letters):
    assert _ids(client, "q=zebra") == [3, 1]
    assert _ids(client, "q=ZEBRA%20CROSS") == [1]
    assert _ids(client, "q=zebra&error=missing_name") == [3]
    assert _ids(client, "q=zebra&status=resolved") == []
    assert _ids(client, "q=no-such-word") == []
    # `%` and `_` are themselves, not wildcards
    assert _ids(client, "q=50%25_o") == [5]
    assert _ids(client, "q=0%25%25") == []


def test_text_inside_the_detail_and_inside_an_edited_attempt(client, letters):
    detail = client.get("/api/dead-letters/4").get_json()["detail"]
    assert "zebra" not in detail
    assert 4 in _ids(client, f"q={detail[:12]}")
    fixed = {"key": "acct-2", "name": "platypus", "value": "still text", "ts": TS}
    response = client.post("/api/dead-letters/2/reprocess", json={"raw": fixed})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert _ids(client, "q=Platypus") == [2]  # the attempt failed again: still open, found by its edit


def test_key_prefix_with_error_and_status(client, letters):
    assert _ids(client, "key=acct-") == [5, 2, 1]
    assert _ids(client, "key=%20acct-1%20") == [1]
    assert _ids(client, "key=acct-&error=invalid_value&q=plain") == [2]
    assert _ids(client, "key=ACCT") == []  # keys are exact
    assert _ids(client, "key=user&status=open") == [4, 3]


def test_a_search_pages_through_with_its_cursor(client, letters):
    first = client.get("/api/dead-letters?key=acct&limit=2").get_json()
    assert [d["id"] for d in first["items"]] == [5, 2]
    rest = client.get(f"/api/dead-letters?key=acct&limit=2&cursor={first['next']}").get_json()
    assert [d["id"] for d in rest["items"]] == [1] and rest["next"] is None


def test_counts_follow_the_status_and_the_search(client, conn, letters):
    client.post("/api/dead-letters/1/discard", json={"reason": "noise"})
    assert client.get("/api/dead-letters?q=zebra").get_json()["counts"] == {"invalid_value": 1, "missing_name": 1}
    assert client.get("/api/dead-letters?q=zebra&status=open").get_json()["counts"] == {"missing_name": 1}
    tallies = queries.dead_letter_tallies(conn, "events", status="open")
    assert [(e["error"], e["n"]) for e in tallies["errors"]] == [("invalid_timestamp", 1), ("invalid_value", 2),
                                                                ("missing_name", 1)]
    assert {s["status"]: s["n"] for s in tallies["statuses"]} == {"open": 4, "resolved": 0, "discarded": 1}
    searched = queries.dead_letter_tallies(conn, "events", status="discarded", text="zebra")
    assert searched["errors"] == [{"error": "invalid_value", "n": 1, "capped": False}]
    assert {s["status"]: s["n"] for s in searched["statuses"]} == {"open": 1, "resolved": 0, "discarded": 1}
    assert searched["total"] == 2
    assert queries.dead_letter_count(conn, "events", status="open", key_prefix="acct", text="VALUE") == 2
    assert queries.dead_letter_ids(conn, "events", text="zebra") == [1, 3]


def test_counts_beside_a_list_stop_at_the_cap_and_say_so(client, conn, letters, monkeypatch):
    monkeypatch.setattr("app.queries.dead_letters.COUNT_CAP", 2)
    tallies = queries.dead_letter_tallies(conn, "events")
    assert {s["status"]: (s["n"], s["capped"]) for s in tallies["statuses"]} == {
        "open": (2, True), "resolved": (0, False), "discarded": (0, False)}
    assert (tallies["total"], tallies["total_capped"]) == (2, True)
    assert {e["error"]: (e["n"], e["capped"]) for e in tallies["errors"]} == {
        "invalid_timestamp": (1, False), "invalid_value": (2, True), "missing_name": (1, False)}
    assert queries.dead_letter_count(conn, "events", status="open") == 5  # a bulk action counts exactly
    page = client.get("/dead-letters").get_data(as_text=True)
    assert "open <b>2+</b>" in page and "all 4+ matching this filter" in page
    monkeypatch.setattr("app.queries.dead_letters.SEARCH_COUNT_CAP", 1)  # a search's counts stop sooner
    searched = queries.dead_letter_tallies(conn, "events", text="zebra")
    assert {s["status"]: (s["n"], s["capped"]) for s in searched["statuses"]}["open"] == (1, True)


@pytest.mark.parametrize(("query", "words"), [
    ("q=ab", "3 to 200 characters"), (f"q={'x' * 201}", "3 to 200 characters"),
    ("q=ab%00c", "without NUL"), ("key=a%00", "without NUL"), (f"key={'k' * 257}", "256"),
])
def test_too_short_or_unstorable_search_is_refused_with_a_message(client, letters, query, words):
    error = assert_error(client.get(f"/api/dead-letters?{query}"), 400, "bad_parameter")
    assert words in str(error)


def test_unstorable_text_given_to_the_queries_matches_nothing(conn, letters):
    assert queries.dead_letters_page(conn, "events", text="zeb\ud800ra")["rows"] == []
    assert queries.dead_letter_count(conn, "events", key_prefix="acct\x00") == 0


def test_the_openapi_document_shows_the_search_parameters(client):
    spec = client.get("/api/openapi.json").get_json()
    params = {p["name"]: p for p in spec["paths"]["/api/dead-letters"]["get"]["parameters"]}
    assert "q" in params and "key" in params
    assert params["q"]["schema"]["minLength"] == 3 and params["key"]["schema"]["maxLength"] == 256


def test_next_open_one_in_list_order_within_the_filter(client, conn, letters):
    client.post("/api/dead-letters/2/discard", json={})
    nxt = queries.next_open_dead_letter
    assert nxt(conn, 5) == 4 and nxt(conn, 4) == 3 and nxt(conn, 3) == 1
    assert nxt(conn, 1) == 5  # past the oldest: back to the newest open one
    assert nxt(conn, 2) == 1  # from one no longer open: the next in order
    assert nxt(conn, 5, "events", error="invalid_value") == 1
    assert nxt(conn, 1, error="invalid_value") == 5
    assert nxt(conn, 3, text="zebra") == 1 and nxt(conn, 1, text="zebra") == 3
    assert nxt(conn, 4, key_prefix="user") == 3 and nxt(conn, 3, key_prefix="user", run_id=1) == 4
    assert nxt(conn, 4, error="invalid_timestamp") is None  # the only one
    assert nxt(conn, 4, run_id=99) is None
