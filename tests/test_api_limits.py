"""The API's limits and hostile inputs: field and body sizes, body types, ids and numbers, the cross-site gate."""
import json

import pytest

from .conftest import SAMPLE_INPUT
from .test_api import assert_error, open_dead_letter, upload, wait_for


@pytest.fixture
def loaded(client, app):
    response = upload(client, SAMPLE_INPUT.read_bytes())
    return wait_for(client, response.headers["Location"], app)


# --- defect 3: every field and body has a size limit; errors never echo the input --------------------

def test_a_discard_reason_is_at_most_500_characters(client, loaded):
    url = f"/api/dead-letters/{open_dead_letter(client, 'missing_key')['id']}/discard"
    error = assert_error(client.post(url, json={"reason": "x" * 501}), 400, "bad_request")
    assert "reason" in error["message"] and "x" * 100 not in error["message"]
    response = client.post(url, json={"reason": "y" * 500})
    assert response.status_code == 200 and response.get_json()["reason"] == "y" * 500


def test_a_bulk_discard_reason_is_at_most_500_characters(client, loaded):
    body = {"filter": {}, "confirm": 2, "reason": "x" * 501}
    assert_error(client.post("/api/dead-letters/discard", json=body), 400, "bad_request")
    assert client.get("/api/dead-letters?status=discarded").get_json()["items"] == []


@pytest.mark.parametrize("as_text", [False, True], ids=["object", "json-text"])
def test_an_edited_record_is_at_most_the_record_limit(client, app, loaded, as_text):
    app.config["SLUICE_MAX_RECORD_BYTES"] = 200
    letter = open_dead_letter(client, "invalid_value")
    url = f"/api/dead-letters/{letter['id']}/reprocess"
    record = {"key": "evt-004", "name": "n" * 300, "value": 1, "ts": "2025-01-13T10:00:00"}
    error = assert_error(client.post(url, json={"raw": json.dumps(record) if as_text else record}),
                         413, "record_too_large")
    assert "200" in error["message"] and "n" * 50 not in error["message"]
    assert client.get(f"/api/dead-letters/{letter['id']}").get_json()["attempts"] == 0
    small = dict(record, name="ok")
    response = client.post(url, json={"raw": json.dumps(small) if as_text else small})
    assert response.status_code == 200 and response.get_json()["dead_letter"]["status"] == "resolved"


def test_a_json_body_over_the_request_limit_is_413(client, app, loaded):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    url = f"/api/dead-letters/{open_dead_letter(client, 'missing_key')['id']}/discard"
    assert_error(client.post(url, json={"reason": "x" * 2000}), 413, "too_large")
    assert_error(client.put("/api/watermarks/events_ts", json={"value": " " * 2000}), 413, "too_large")


def test_errors_never_echo_the_whole_input(client, loaded):
    value = "2025-01-01" + "Z" * 100_000
    error = assert_error(client.put("/api/watermarks/events_ts", json={"value": value}), 422, "invalid")
    assert len(error["message"]) <= 501
    error = assert_error(client.get("/api/watermarks/" + "w" * 5000), 404, "not_found")
    assert len(error["message"]) < 400
    error = assert_error(client.post("/api/dead-letters/discard",
                                     json={"confirm": 1, "k" * 50_000: 1}), 400, "bad_request")
    assert "unknown fields" in error["message"] and len(error["message"]) < 400


# --- defect 10: a JSON body's type is checked before the body is read --------------------------------

@pytest.mark.parametrize("method, path", [("post", "/api/dead-letters/1/discard"),
                                          ("post", "/api/dead-letters/1/reprocess"),
                                          ("post", "/api/dead-letters/discard"),
                                          ("put", "/api/watermarks/events_ts")])
def test_a_body_of_the_wrong_type_is_415_without_being_read(client, loaded, method, path):
    # Larger than the request limit: reading it would answer 413.
    response = getattr(client, method)(path, data=b"x" * (2 * 2 ** 20), content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


# --- defect 11: hostile ids, numbers and origins answer 4xx, never 500 --------------------------------

@pytest.mark.parametrize("origin", ["http://[", "http://[::1", "http://localhost:99999", "http://localhost:x",
                                    "http://user@localhost", "http://localhost/path", "localhost", ""])
def test_a_malformed_origin_is_refused_cleanly(client, origin):
    assert_error(upload(client, b"[]", headers={"Origin": origin}), 403, "cross_site")
    assert_error(client.delete("/api/watermarks/events_ts", headers={"Origin": origin}), 403, "cross_site")
    assert client.get("/api/runs").get_json()["items"] == []


def test_ids_in_other_scripts_or_past_bigint_name_no_resource(client, app):
    for i in range(3):
        upload(client, b"[]")
    assert client.get("/api/runs/3").status_code == 200
    for path in ("/api/runs/%D9%A3", "/api/runs/%D9%A3/cancel", "/api/runs/9223372036854775808",
                 "/api/dead-letters/99999999999999999999", "/api/dead-letters/%D9%A3",
                 "/api/runs/0"):
        method = client.post if path.endswith("cancel") else client.get
        assert_error(method(path), 404, "not_found")


@pytest.mark.parametrize("query", ["run=%D9%A3", "run=%C2%B2", "run=9223372036854775808", "run=1.0", "run=0",
                                   "run=%201", "limit=1.0", "limit=0.0", "limit=%D9%A3", "limit=1_0"])
def test_integers_in_queries_are_ascii_digits_in_range(client, loaded, query):
    assert_error(client.get(f"/api/dead-letters?{query}"), 400, "bad_parameter")


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_an_export_whose_filter_overflows_is_400_before_streaming(client, loaded, fmt):
    response = client.get(f"/api/dead-letters?format={fmt}&run=99999999999999999999")
    assert_error(response, 400, "bad_parameter")


@pytest.mark.parametrize("body", [{"confirm": 2.5}, {"confirm": True}, {"confirm": "2"},
                                  {"confirm": 2, "filter": {"run": 1.5}}, {"confirm": 1e300},
                                  {"confirm": 2, "filter": {"run": 2 ** 63}}])
def test_integers_in_bodies_are_json_integers(client, loaded, body):
    assert_error(client.post("/api/dead-letters/discard", json=body), 400, "bad_request")
    assert len(client.get("/api/dead-letters?status=open").get_json()["items"]) == 2


def test_a_json_number_without_fraction_is_an_integer_as_json_schema_says(client, loaded):
    response = client.post("/api/dead-letters/discard", json={"confirm": 2.0, "filter": {"run": 1.0}})
    assert response.get_json() == {"count": 2, "run": None}


def test_the_dead_letter_pages_take_unicode_digits_and_huge_runs_as_no_filter(client, loaded):
    for path in ("/dead-letters?run=%C2%B2", "/dead-letters?run=99999999999999999999",
                 "/dead-letters/bulk?action=discard&run=%D9%A3"):
        assert client.get(path).status_code == 200, path
    rows = json.loads(client.get("/dead-letters/export.json?run=99999999999999999999").get_data())
    assert len(rows) == 2


# --- defect 12: the gate compares whole origins, case-insensitively --------------------------------

@pytest.mark.parametrize("headers", [{"Origin": "https://localhost"}, {"Origin": "http://localhost:5000"},
                                     {"Origin": "http://localhost.evil.example"},
                                     {"Sec-Fetch-Site": "CROSS-SITE"}, {"Sec-Fetch-Site": "Same-Site"}])
def test_the_gate_refuses_another_scheme_port_or_site_in_any_case(client, headers):
    assert_error(upload(client, b"[]", headers=headers), 403, "cross_site")
    assert client.get("/api/runs").get_json()["items"] == []


@pytest.mark.parametrize("headers", [{"Origin": "HTTP://LOCALHOST"}, {"Origin": "http://localhost:80"},
                                     {"Origin": "http://localhost", "Sec-Fetch-Site": "SAME-ORIGIN"},
                                     {"Sec-Fetch-Site": "none"}])
def test_the_gate_lets_the_same_origin_through_in_any_case(client, headers):
    assert upload(client, b"[]", headers=headers).status_code == 202


# --- one parser per view, for the pages and the API -----------------------------------------------

def test_pages_and_api_trim_a_key_or_name_prefix_alike(client, app):
    records = [{"key": k, "name": n, "value": 1, "ts": "2025-01-01T00:00:00"}
               for k, n in (("k1", "alpha"), ("k10", "beta"), ("x1", "alpha"))]
    wait_for(client, upload(client, json.dumps(records).encode()).headers["Location"], app)
    api = client.get("/api/target?key=%20k1%20").get_json()["items"]
    assert [r["key"] for r in api] == ["k1", "k10"]
    assert [r["key"] for r in client.get("/api/target?name=alp%20").get_json()["items"]] == ["k1", "x1"]
    assert len(client.get("/api/target?key=%20%20").get_json()["items"]) == 3  # a blank prefix is no filter
    page = client.get("/target?key=%20k1%20").get_data(as_text=True)
    assert "k10" in page and "x1" not in page


def test_a_json_body_of_white_space_is_not_json(client, loaded):
    url = f"/api/dead-letters/{open_dead_letter(client, 'missing_key')['id']}/reprocess"
    assert_error(client.post(url, data="\n ", content_type="application/json"), 400, "bad_json")
    assert client.get(url.rpartition("/")[0]).get_json()["attempts"] == 0
