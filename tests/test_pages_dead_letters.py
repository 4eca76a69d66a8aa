"""Dead letters: filters, counts, detail page, reprocess, edit-and-retry, discard, reopen, bulk, export."""
import csv
import io
import re

from .test_pages_helpers import load, text, token

GOOD_TS = "2025-02-01T00:00:00Z"
BAD = [
    {"key": "v1", "name": "n", "value": "abc", "ts": GOOD_TS},
    {"key": "v2", "name": "n", "value": "xyz", "ts": GOOD_TS},
    {"key": "m1", "value": 1, "ts": GOOD_TS},
    {"key": "t1", "name": "n", "value": 1, "ts": "yesterday"},
]


def _ids(body: str) -> list[int]:
    # The links keep the list's filter (`?status=…`), so the letter's page knows where it came from.
    return [int(i) for i in re.findall(r'<td><a href="/dead-letters/(\d+)[?"]', body)]


def test_list_filters_and_counts_per_error(client, conn, write):
    load(conn, write, BAD)
    body = text(client.get("/dead-letters"))
    assert _ids(body) == [4, 3, 2, 1]
    assert "invalid_value <b>2</b>" in body and "missing_name <b>1</b>" in body
    assert "open <b>4</b>" in body and "resolved <b>0</b>" in body and "all <b>4</b>" in body
    assert _ids(text(client.get("/dead-letters?error=invalid_value"))) == [2, 1]
    assert _ids(text(client.get("/dead-letters?run=1&status=all"))) == [4, 3, 2, 1]
    assert _ids(text(client.get("/dead-letters?run=2"))) == []
    assert _ids(text(client.get("/dead-letters?status=resolved"))) == []


def test_detail_page_pretty_prints_the_raw_record(client, conn, write):
    load(conn, write, BAD)
    body = text(client.get("/dead-letters/1"))
    assert "<code>invalid_value</code>" in body and "abc" in body
    assert '{\n  &#34;key&#34;: &#34;v1&#34;,' in body or '{\n  &quot;key&quot;: &quot;v1&quot;,' in body


def test_edit_and_retry_resolves_and_lineage_shows_it(client, conn, write):
    load(conn, write, BAD)
    raw = '{"key": "v1", "name": "n", "value": 12.5, "ts": "2025-02-01T00:00:00Z"}'
    response = client.post("/dead-letters/1/edit", data={"csrf_token": token(client, "/dead-letters/1"), "raw": raw})
    assert response.status_code == 303
    body = text(client.get("/dead-letters/1"))
    assert "resolved" in body and "<strong>inserted</strong>" in body
    assert 'class="step reprocessed"' in body and 'class="step inserted"' in body  # its history
    lineage = text(client.get("/lineage/v1"))
    assert lineage.index('class="step reprocessed"') < lineage.index('class="step inserted"') \
        < lineage.index('class="step rejected"')  # newest run first, a run's steps in order
    assert "12.5" in lineage
    again = client.post("/dead-letters/1/reprocess", data={"csrf_token": token(client, "/dead-letters/2")},
                        follow_redirects=True)
    assert "only open ones can be reprocessed" in text(again)


def test_edit_with_invalid_json_is_refused_before_it_runs(client, conn, write):
    load(conn, write, BAD)
    response = client.post("/dead-letters/1/edit", data={"csrf_token": token(client, "/dead-letters/1"),
                                                         "raw": '{"key": "v1",'})
    assert response.status_code == 400
    assert "not valid JSON" in text(response) and 'aria-invalid="true"' in text(response)
    assert "/runs/2" not in text(client.get("/runs"))  # no run was made


def test_reprocess_unchanged_keeps_it_open_and_counts_the_attempt(client, conn, write):
    load(conn, write, BAD)
    response = client.post("/dead-letters/2/reprocess", data={"csrf_token": token(client, "/dead-letters/2")},
                           follow_redirects=True)
    assert "rejected again" in text(response)
    body = text(client.get("/dead-letters/2"))
    assert '<span class="status open">open</span>' in body and "<dt>Retries</dt><dd>1</dd>" in body


def test_discard_with_reason_then_reopen(client, conn, write):
    load(conn, write, BAD)
    response = client.post("/dead-letters/3/discard", data={"csrf_token": token(client, "/dead-letters/3"),
                                                            "reason": "test data"})
    assert response.status_code == 303
    body = text(client.get("/dead-letters/3"))
    assert "discarded" in body and "test data" in body and 'class="step discarded"' in body
    assert _ids(text(client.get("/dead-letters?status=discarded"))) == [3]
    client.post("/dead-letters/3/reopen", data={"csrf_token": token(client, "/dead-letters/3")})
    body = text(client.get("/dead-letters/3"))
    assert '<span class="status open">open</span>' in body and 'class="step reopened"' in body


def test_bulk_discard_confirms_the_count_first(client, conn, write):
    load(conn, write, BAD)
    page = text(client.get("/dead-letters/bulk?action=discard&error=invalid_value"))
    assert '<strong id="bulk-count">2</strong>' in page
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    stale = client.post("/dead-letters/bulk", data={"csrf_token": csrf, "action": "discard",
                                                    "error": "invalid_value", "run": "", "confirm": "3"},
                        follow_redirects=True)
    assert "The selection changed" in text(stale)
    assert _ids(text(client.get("/dead-letters?error=invalid_value"))) == [2, 1]
    done = client.post("/dead-letters/bulk", data={"csrf_token": csrf, "action": "discard", "error": "invalid_value",
                                                   "run": "", "confirm": "2", "reason": "junk"},
                       follow_redirects=True)
    assert "Discarded 2 dead letters" in text(done)
    assert _ids(text(client.get("/dead-letters?status=discarded"))) == [2, 1]
    assert _ids(text(client.get("/dead-letters"))) == [4, 3]


def test_bulk_reprocess_runs_the_open_selection(client, conn, write):
    load(conn, write, BAD)
    page = text(client.get("/dead-letters/bulk?action=reprocess"))
    assert '<strong id="bulk-count">4</strong>' in page
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post("/dead-letters/bulk", data={"csrf_token": csrf, "action": "reprocess", "error": "",
                                                       "run": "", "confirm": "4"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/runs/2")
    body = text(client.get("/runs/2"))
    assert "reprocess" in body and "4 dead letters" in body


def test_actions_refuse_without_csrf(client, conn, write):
    load(conn, write, BAD)
    assert client.post("/dead-letters/1/discard", data={"reason": "x"}).status_code == 400
    assert client.post("/dead-letters/1/edit", data={"raw": "{}"}).status_code == 400
    assert client.post("/dead-letters/bulk", data={"action": "discard", "confirm": "4"}).status_code == 400
    assert _ids(text(client.get("/dead-letters"))) == [4, 3, 2, 1]


def test_export_of_the_view(client, conn, write):
    load(conn, write, BAD + [{"key": "=x", "value": 1, "ts": GOOD_TS}])
    rows = list(csv.reader(io.StringIO(text(client.get("/dead-letters/export.csv?error=missing_name")))))
    assert rows[0][:4] == ["id", "status", "error", "detail"]
    assert [(r[0], r[4]) for r in rows[1:]] == [("5", "'=x"), ("3", "m1")]
    assert client.get("/dead-letters/export.json").json[0]["id"] == 5
