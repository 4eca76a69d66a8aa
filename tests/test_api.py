"""The JSON API through the test client: every endpoint, every error status, and a round trip."""
import gzip
import io
import json
import threading

import pytest

from .conftest import SAMPLE_INPUT, SAMPLE_SUMMARY

TERMINAL = ("succeeded", "failed", "cancelled")


def upload(client, data, query: str = "", **kwargs):
    """POST a raw body to /api/runs."""
    kwargs.setdefault("content_type", "application/json")
    return client.post("/api/runs" + query, data=data, **kwargs)


def drain(app) -> list[int]:
    return app.extensions["sluice_runs"].drain()


def wait_for(client, location: str, app) -> dict:
    """Poll a run as a script would, executing queued runs between polls (no worker thread in tests)."""
    for _ in range(20):
        run = client.get(location).get_json()
        if run["status"] in TERMINAL:
            return run
        drain(app)
    raise AssertionError(f"{location} did not finish: {run}")


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


@pytest.fixture
def loaded(client, app):
    """The sample file loaded through the API; returns the finished run."""
    response = upload(client, SAMPLE_INPUT.read_bytes())
    assert response.status_code == 202
    return wait_for(client, response.headers["Location"], app)


def open_dead_letter(client, error: str) -> dict:
    items = client.get(f"/api/dead-letters?status=open&error={error}").get_json()["items"]
    assert len(items) == 1
    return items[0]


# --- the round trip --------------------------------------------------------------------------------

def test_round_trip_upload_poll_fix_a_dead_letter_see_the_lineage(client, app):
    response = client.post("/api/runs", data={"file": (io.BytesIO(SAMPLE_INPUT.read_bytes()), "sample.json")},
                           content_type="multipart/form-data")
    assert response.status_code == 202
    assert response.headers["Location"] == f"/api/runs/{response.get_json()['id']}"
    assert response.get_json()["status"] == "queued" and response.get_json()["summary"] is None
    assert response.get_json()["source_name"] == "sample.json" and response.get_json()["kind"] == "api"

    run = wait_for(client, response.headers["Location"], app)
    expected = json.loads(SAMPLE_SUMMARY.read_text())
    assert run["status"] == "succeeded"
    assert {k: run["summary"][k] for k in expected} == expected

    letter = open_dead_letter(client, "invalid_value")
    assert json.loads(letter["raw"])["value"] == "abc"
    fixed = dict(json.loads(letter["raw"]), value="12.5")
    response = client.post(f"/api/dead-letters/{letter['id']}/reprocess", json={"raw": fixed})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["run"]["inserted"] == 1
    assert body["dead_letter"]["status"] == "resolved" and body["dead_letter"]["outcome"] == "inserted"

    lineage = client.get("/api/lineage/evt-004").get_json()
    assert lineage["target"]["value"] == 12.5
    steps = [entry["step"] for entry in lineage["items"]]
    assert steps[:3] == ["inserted", "staged", "reprocessed"] and steps[-1] == "rejected"


# --- uploads ---------------------------------------------------------------------------------------

def test_upload_json_lines_and_gzip_raw_bodies(client, app):
    lines = b'{"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}\n' \
            b'{"key": "b", "name": "n", "value": 2, "ts": "2025-01-02T00:00:00Z"}\n'
    first = upload(client, lines, "?filename=two.jsonl", content_type="application/x-ndjson")
    packed = gzip.compress(b'[{"key": "c", "name": "n", "value": 3, "ts": "2025-01-03 00:00"}]')
    second = upload(client, packed,
                    content_type="application/gzip")
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.get_json()["source_name"] == "two.jsonl"
    runs = [wait_for(client, r.headers["Location"], app) for r in (first, second)]
    assert [r["summary"]["inserted"] for r in runs] == [2, 1]
    assert runs[1]["summary"]["watermark"] == "2025-01-03T00:00:00"


def test_upload_options_are_query_parameters(client, app):
    response = upload(client, SAMPLE_INPUT.read_bytes(),
                      "?dry_run=true&max_reject_rate=0.5&ignore_watermark=true")
    options = {"dry_run": True, "max_reject_rate": 0.5, "ignore_watermark": True}
    assert response.get_json()["options"] == options
    run = wait_for(client, response.headers["Location"], app)
    assert run["summary"]["dry_run"] is True and run["summary"]["inserted"] == 5
    assert client.get("/api/target").get_json()["items"] == []  # a dry run keeps nothing


def test_reject_threshold_fails_the_run_with_its_counts(client, app):
    response = upload(client, SAMPLE_INPUT.read_bytes(), "?max_reject_rate=0.1")
    run = wait_for(client, response.headers["Location"], app)
    assert run["status"] == "failed" and "reject threshold" in run["error"]
    assert run["summary"]["rejected"] == 2


def test_malformed_file_is_accepted_and_its_run_fails_saying_where(client, app):
    response = upload(client, b'[{"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00"},\n'
                                b'  {"key": ]')
    assert response.status_code == 202
    run = wait_for(client, response.headers["Location"], app)
    assert run["status"] == "failed"
    assert "line 2" in run["error"] and "column" in run["error"]


def test_upload_that_cannot_start_json_is_refused_with_415(client):
    assert_error(upload(client, b"key,name,value,ts\n", content_type="application/octet-stream"),
                 415, "not_json")
    gz = client.post("/api/runs", data={"file": (io.BytesIO(b"\x00\x01binary"), "x.bin")},
                     content_type="multipart/form-data")
    assert_error(gz, 415, "not_json")
    assert client.get("/api/runs").get_json()["items"] == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_raw_upload_must_declare_a_json_or_gzip_media_type(client, content_type):
    # A cross-site HTML form can send these types, and only these (besides multipart).
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/api/runs", data=b"[]", headers=headers)
    assert_error(response, 415, "unsupported_media_type")


def test_upload_over_the_limit_is_refused_with_413(client, app):
    app.config["SLUICE_MAX_UPLOAD_BYTES"] = 64
    error = assert_error(upload(client, b"[" + b" " * 100 + b"]"), 413, "too_large")
    assert "64" in error["message"]
    response = client.post("/api/runs", data={"file": (io.BytesIO(b"[" + b" " * 100 + b"]"), "big.json")},
                           content_type="multipart/form-data")
    assert_error(response, 413, "too_large")


@pytest.mark.parametrize("query", ["?max_reject_rate=2", "?max_reject_rate=abc", "?dry_run=yes",
                                   "?ignore_watermark=1"])
def test_bad_upload_options_are_400(client, query):
    assert_error(upload(client, b"[]", query), 400, "bad_parameter")


def test_multipart_without_the_file_field_is_400(client):
    response = client.post("/api/runs", data={"other": (io.BytesIO(b"[]"), "x.json")},
                           content_type="multipart/form-data")
    assert_error(response, 400)


# --- runs ------------------------------------------------------------------------------------------

def test_runs_list_pages_with_next_until_the_end_and_filters_by_status(client, app):
    ids = [upload(client, f'[{{"key": "k{i}", "name": "n", "value": {i}, "ts": "2025-01-0{i}T00:00:00"}}]'
                  .encode()).get_json()["id"] for i in range(1, 6)]
    client.post(f"/api/runs/{ids[0]}/cancel")
    seen, cursor = [], None
    for _ in range(10):
        page = client.get("/api/runs?limit=2" + (f"&cursor={cursor}" if cursor else "")).get_json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    queued = client.get("/api/runs?status=queued").get_json()["items"]
    assert [r["id"] for r in queued] == sorted(ids[1:], reverse=True)
    assert_error(client.get("/api/runs?status=sleeping"), 400, "bad_parameter")
    assert_error(client.get("/api/runs?limit=0"), 400, "bad_parameter")
    assert_error(client.get("/api/runs?cursor=not-a-cursor"), 400, "bad_cursor")


def test_run_shows_progress_while_running_and_summary_when_done(client, app):
    svc = app.extensions["sluice_runs"]
    run_id = upload(client, SAMPLE_INPUT.read_bytes()).get_json()["id"]
    assert svc.claim_next() == run_id
    # What the pipeline's progress callback writes mid-run, as the executor's reporter does.
    reporter = svc.execution.reporter(run_id, 571, threading.Event())
    reporter("reading", 20000, 300)
    running = client.get(f"/api/runs/{run_id}").get_json()
    assert running["status"] == "running" and running["summary"] is None
    assert running["progress"]["phase"] == "reading" and running["progress"]["records"] == 20000

    cancelled = client.post(f"/api/runs/{run_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.get_json()["cancel_requested"] is True
    svc.execute(run_id)
    done = client.get(f"/api/runs/{run_id}").get_json()
    assert done["status"] == "cancelled" and done["progress"] is None
    assert done["summary"]["status"] == "cancelled"


def test_cancel_then_retry(client, app):
    run_id = upload(client, SAMPLE_INPUT.read_bytes()).get_json()["id"]
    response = client.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code == 202 and response.get_json()["status"] == "cancelled"
    assert_error(client.post(f"/api/runs/{run_id}/cancel"), 409, "conflict")

    retry = client.post(f"/api/runs/{run_id}/retry")
    assert retry.status_code == 202
    new = retry.get_json()
    assert new["kind"] == "retry" and new["retry_of_id"] == run_id
    assert retry.headers["Location"] == f"/api/runs/{new['id']}"
    assert client.get(f"/api/runs/{run_id}").get_json()["retried_by"] == [new["id"]]
    assert wait_for(client, retry.headers["Location"], app)["summary"]["inserted"] == 5
    assert_error(client.post(f"/api/runs/{new['id']}/retry"), 409, "conflict")  # it succeeded


@pytest.mark.parametrize("method, path", [("get", "/api/runs/999"), ("post", "/api/runs/999/cancel"),
                                          ("post", "/api/runs/999/retry"), ("get", f"/api/runs/{2 ** 70}"),
                                          ("get", "/api/runs/abc"), ("get", "/api/dead-letters/999"),
                                          ("post", "/api/dead-letters/999/reprocess"),
                                          ("post", "/api/dead-letters/999/discard"),
                                          ("post", "/api/dead-letters/999/reopen"),
                                          ("get", "/api/lineage/never-seen"),
                                          ("get", "/api/watermarks/other"),
                                          ("put", "/api/watermarks/other"), ("get", "/api/nothing-here")])
def test_unknown_resources_are_404_json(client, method, path):
    assert_error(getattr(client, method)(path), 404, "not_found")


# --- target and lineage ----------------------------------------------------------------------------

@pytest.fixture
def target_rows(client, app):
    records = [{"key": f"k{i:02}", "name": ["=SUM(A1)", "alpha", "-beta", "gamma"][i % 4], "value": i * 1.5,
                "ts": f"2025-02-{i + 1:02}T00:00:00"} for i in range(12)]
    records.append({"key": "dir/file", "name": "slash", "value": -3, "ts": "2025-01-01T00:00:00"})
    wait_for(client, upload(client, json.dumps(records).encode()).headers["Location"], app)
    return records


def test_target_pages_by_key_and_by_value_descending(client, target_rows):
    keys, cursor = [], None
    for _ in range(10):
        page = client.get("/api/target?limit=5" + (f"&cursor={cursor}" if cursor else "")).get_json()
        keys += [r["key"] for r in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert keys == sorted(r["key"] for r in target_rows)
    page = client.get("/api/target?sort=value&order=desc&limit=3").get_json()
    assert [r["value"] for r in page["items"]] == [16.5, 15.0, 13.5]
    rest = client.get(f"/api/target?sort=value&order=desc&limit=20&cursor={page['next']}").get_json()
    assert rest["items"][-1]["key"] == "dir/file" and rest["next"] is None
    assert_error(client.get(f"/api/target?sort=ts&cursor={page['next']}"), 400, "bad_cursor")
    assert_error(client.get("/api/target?sort=color"), 400, "bad_parameter")


def test_target_searches_by_key_and_name_prefix(client, target_rows):
    assert [r["key"] for r in client.get("/api/target?key=k1").get_json()["items"]] == ["k10", "k11"]
    assert [r["key"] for r in client.get("/api/target?name=gam").get_json()["items"]] == ["k03", "k07", "k11"]
    assert client.get("/api/target?key=zz").get_json() == {"items": [], "next": None}
    assert_error(client.get("/api/target?key=%00"), 400, "bad_parameter")


def test_target_exports_the_whole_view_as_csv_with_the_formula_guard_and_as_json(client, target_rows):
    response = client.get("/api/target?format=csv&name=%3D&limit=1")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "key,name,value,ts,updated_at,run_id"
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["k00", "'=SUM(A1)", "0"], ["k04", "'=SUM(A1)", "6"],
        ["k08", "'=SUM(A1)", "12"]]
    rows = client.get("/api/target?format=json&sort=ts&order=desc").get_json()
    assert len(rows) == 13 and rows[0]["key"] == "k11" and rows[-1]["key"] == "dir/file"


def test_lineage_of_a_key_with_a_slash_and_its_pages(client, app, target_rows):
    again = upload(client, b'[{"key": "dir/file", "name": "x", "value": 1, "ts": "2025-03-01T00:00:00"}]')
    wait_for(client, again.headers["Location"], app)
    first = client.get("/api/lineage/dir/file?limit=2").get_json()
    assert first["target"]["name"] == "x"
    assert [e["step"] for e in first["items"]] == ["updated", "staged"]
    second = client.get(f"/api/lineage/dir/file?limit=2&cursor={first['next']}").get_json()
    assert [e["step"] for e in second["items"]] == ["inserted", "staged"] and second["next"] is None


# --- dead letters ----------------------------------------------------------------------------------

def test_dead_letters_list_filters_counts_and_export(client, loaded):
    body = client.get("/api/dead-letters").get_json()
    assert body["counts"] == {"invalid_value": 1, "missing_key": 1}
    assert {d["error"] for d in body["items"]} == {"invalid_value", "missing_key"}
    only = client.get("/api/dead-letters?error=missing_key").get_json()["items"]
    assert [d["error"] for d in only] == ["missing_key"]
    assert client.get(f"/api/dead-letters?run={loaded['id'] + 1}").get_json()["items"] == []
    assert len(client.get("/api/dead-letters?limit=1").get_json()["items"]) == 1
    exported = client.get("/api/dead-letters?format=json&status=open").get_json()
    assert sorted(d["error"] for d in exported) == ["invalid_value", "missing_key"]
    csv_text = client.get("/api/dead-letters?format=csv").get_data(as_text=True)
    assert csv_text.splitlines()[0].startswith("id,") and "evt-004" in csv_text
    assert_error(client.get("/api/dead-letters?error=bad_mood"), 400, "bad_parameter")
    assert_error(client.get("/api/dead-letters?run=x"), 400, "bad_parameter")


def test_dead_letter_detail_and_a_retry_that_fails_again(client, loaded):
    letter = open_dead_letter(client, "invalid_value")
    detail = client.get(f"/api/dead-letters/{letter['id']}").get_json()
    assert detail["status"] == "open" and detail["last_raw"] is None
    assert [h["step"] for h in detail["history"]] == ["rejected"]
    # An edit given as JSON text, still invalid: the dead letter stays open with the new error.
    response = client.post(f"/api/dead-letters/{letter['id']}/reprocess",
                           json={"raw": '{"key": "evt-004", "name": "refund", "value": 1, "ts": "soon"}'})
    assert response.status_code == 200
    after = response.get_json()["dead_letter"]
    assert after["status"] == "open" and after["error"] == "invalid_timestamp" and after["attempts"] == 1
    assert json.loads(after["raw"])["value"] == "abc"  # the original raw is never overwritten
    assert json.loads(after["last_raw"])["ts"] == "soon"


def test_reprocess_unchanged_and_its_errors(client, loaded):
    letter = open_dead_letter(client, "missing_key")
    url = f"/api/dead-letters/{letter['id']}/reprocess"
    assert_error(client.post(url, json={"raw": "{not json"}), 422, "invalid")
    assert_error(client.post(url, data="{}", content_type="text/plain"), 415)
    assert_error(client.post(url, data="{nope", content_type="application/json"), 400, "bad_json")
    assert_error(client.post(url, json=[1]), 400)
    assert_error(client.post(url, json={"raw": 5}), 400)
    assert "unknown fields: 'row'" in assert_error(client.post(url, json={"row": {}}), 400)["message"]
    response = client.post(url)  # unchanged: rejected again, stays open
    assert response.status_code == 200 and response.get_json()["run"]["rejected"] == 1
    fixed = client.post(url, json={"raw": {"key": "evt-007", "name": "orphan", "value": 2,
                                           "ts": "2025-01-13T10:00:00"}})
    assert fixed.get_json()["dead_letter"]["status"] == "resolved"
    assert_error(client.post(url), 409, "conflict")  # reprocessing a resolved one is refused


def test_discard_and_reopen(client, loaded):
    letter = open_dead_letter(client, "missing_key")
    url = f"/api/dead-letters/{letter['id']}"
    assert_error(client.post(url + "/reopen"), 409, "conflict")
    assert_error(client.post(url + "/discard", json={"reason": 5}), 400)
    response = client.post(url + "/discard", json={"reason": "test data"})
    assert response.status_code == 200
    assert response.get_json()["status"] == "discarded" and response.get_json()["reason"] == "test data"
    assert response.get_json()["history"][0]["detail"] == "discarded: test data"
    assert_error(client.post(url + "/discard"), 409, "conflict")
    assert_error(client.post(url + "/reprocess"), 409, "conflict")
    response = client.post(url + "/reopen")
    assert response.status_code == 200 and response.get_json()["status"] == "open"


def test_bulk_actions_need_the_count_the_caller_was_shown(client, loaded):
    error = assert_error(client.post("/api/dead-letters/discard", json={"filter": {}, "confirm": 5}),
                         409, "count_mismatch")
    assert error["count"] == 2
    bad_filter = {"filter": {"error": "nope"}, "confirm": 1}
    assert_error(client.post("/api/dead-letters/discard", json=bad_filter), 400)
    assert_error(client.post("/api/dead-letters/discard", json={"filter": {}}), 400)
    assert_error(client.post("/api/dead-letters/discard"), 400)
    response = client.post("/api/dead-letters/discard",
                           json={"filter": {"error": "missing_key"}, "confirm": 1, "reason": "no key"})
    assert response.get_json() == {"count": 1, "run": None}

    by_run = {"filter": {"run": loaded["id"]}, "confirm": 1}
    response = client.post("/api/dead-letters/reprocess", json=by_run)
    assert response.status_code == 200
    body = response.get_json()
    assert body["count"] == 1 and body["run"]["input_records"] == 1 and body["run"]["rejected"] == 1
    assert client.post("/api/dead-letters/reprocess", json={"confirm": 0}).status_code == 409
    statuses = sorted(d["status"] for d in client.get("/api/dead-letters").get_json()["items"])
    assert statuses == ["discarded", "open"]


# --- watermarks ------------------------------------------------------------------------------------

def test_watermarks_show_preview_set_and_reset(client, loaded):
    listed = client.get("/api/watermarks").get_json()
    assert [w["name"] for w in listed["items"]] == ["events_ts"] and listed["next"] is None
    assert listed["items"][0]["value"] == "2025-01-15T12:00:00"

    preview = client.get("/api/watermarks/events_ts/preview?value=2025-01-12T00:00:00%2B02:00").get_json()
    assert preview == {"name": "events_ts", "value": "2025-01-11T22:00:00", "rows_at_or_after": 3}
    assert client.get("/api/watermarks/events_ts/preview").get_json()["rows_at_or_after"] == 5
    assert_error(client.get("/api/watermarks/events_ts/preview?value=yesterday"), 422, "invalid")

    response = client.put("/api/watermarks/events_ts", json={"value": "2025-01-12T00:00:00Z"})
    assert response.status_code == 200 and response.get_json()["value"] == "2025-01-12T00:00:00"
    assert response.get_json()["history"][0]["via"] == "api"
    future = {"value": "2999-01-01T00:00:00"}
    assert_error(client.put("/api/watermarks/events_ts", json=future), 422, "invalid")
    assert_error(client.put("/api/watermarks/events_ts", json={}), 400)
    assert_error(client.put("/api/watermarks/events_ts", data="2025", content_type="text/plain"), 415)

    response = client.delete("/api/watermarks/events_ts")
    assert response.status_code == 200 and response.get_json()["value"] is None
    history = client.get("/api/watermarks/events_ts?limit=2").get_json()
    assert [(h["old_value"], h["new_value"]) for h in history["history"]] == [
        ("2025-01-12T00:00:00", None), ("2025-01-15T12:00:00", "2025-01-12T00:00:00")]
    rest = client.get(f"/api/watermarks/events_ts?cursor={history['history_next']}").get_json()
    assert [h["via"] for h in rest["history"]] == ["pipeline"]


# --- errors, methods, cross-site requests ----------------------------------------------------------

def test_wrong_method_is_405_json_with_allow(client):
    response = client.delete("/api/runs")
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_dashboard_errors_stay_html(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and response.mimetype == "text/html"


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "null"}])
def test_cross_site_browser_requests_cannot_change_anything(client, headers):
    assert_error(upload(client, b"[]", headers=headers), 403, "cross_site")
    assert_error(client.delete("/api/watermarks/events_ts", headers=headers), 403, "cross_site")
    assert client.get("/api/runs").get_json()["items"] == []
    assert client.get("/api/runs", headers=headers).status_code == 200  # reads are left to the browser's CORS


def test_scripts_and_same_origin_pages_need_no_csrf_token(client, app):
    assert app.config.get("WTF_CSRF_ENABLED", True)
    assert upload(client, b"[]").status_code == 202
    same_origin = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert upload(client, b"[]", headers=same_origin).status_code == 202


# --- the OpenAPI document --------------------------------------------------------------------------

def test_openapi_document_describes_exactly_the_api_routes(client, app):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = rule.rule
            for name in rule.arguments:
                path = path.replace(f"<int:{name}>", f"{{{name}}}").replace(f"<path:{name}>", f"{{{name}}}") \
                    .replace(f"<{name}>", f"{{{name}}}")
            routed |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed
    for path, ops in doc["paths"].items():
        for op in ops.values():
            named = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert named == {part[1:-1] for part in path.split("/") if part.startswith("{")}
