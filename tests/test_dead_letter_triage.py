"""Dead-letter triage at scale: compact rows, checked and all-matching selections, counts within a status,
the next open one, retry hints, and bulk reopen over the API."""
import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from app.pipeline.validate import utc_now

from .conftest import sign_in_as
from .test_audit_actions import entries
from .test_dataset_pages import create, upload
from .test_pages_dead_letters import BAD, GOOD_TS, _ids
from .test_pages_helpers import load, text, token

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def _confirm(client, action: str, ids=(), **args):
    """The confirmation page of a bulk action on checked ids (or, with `all=1`, on all the filter matches)."""
    query = [("action", action), *(("picked", "1"),) * bool(ids), *(("ids", i) for i in ids), *args.items()]
    return client.get("/dead-letters/bulk?" + urlencode(query))


def _post(client, page, action: str, confirm: int, ids=(), **fields):
    data = {"csrf_token": _CSRF.search(text(page)).group(1), "action": action, "error": "", "run": "",
            "confirm": str(confirm), "ids": [str(i) for i in ids], **fields}
    return client.post("/dead-letters/bulk", data=data, follow_redirects=True)


def _count(page) -> str:
    return re.search(r'<strong id="bulk-count">([\d,]+)</strong>', text(page)).group(1)


def test_compact_rows_show_a_truncated_escaped_preview_and_who(client, conn, write):
    long_name = "<script>alert(1)</script>" + "x" * 300
    load(conn, write, [{"key": "s1", "name": long_name, "value": "nope", "ts": GOOD_TS}])
    client.post("/dead-letters/1/discard", data={"csrf_token": token(client, "/dead-letters/1"), "reason": "spam"})
    body = text(client.get("/dead-letters?status=discarded"))
    row = re.search(r'<td class="preview"><code title="([^"]*)">([^<]*)</code>', body)
    assert row, "no raw preview in the row"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in row.group(2) and row.group(2).endswith("…")
    assert len(row.group(2)) < len(row.group(1))  # the full text (up to 2,000 characters) is in the title
    assert "<script>alert(1)" not in body
    assert '<td class="small who">admin</td>' in body
    assert 'title="spam">spam</span>' in body  # the discard reason shows in the list


def test_checked_ids_discard_reopen_and_reprocess_with_their_counts(client, conn, write):
    load(conn, write, BAD)
    page = _confirm(client, "discard", [1, 2])
    assert _count(page) == "2" and "you selected" in text(page)
    assert "Discarded 2 dead letters" in text(_post(client, page, "discard", 2, [1, 2], reason="junk"))
    assert _ids(text(client.get("/dead-letters?status=discarded"))) == [2, 1]
    # Reopen three where one is open: it is reported, not silently dropped.
    page = _confirm(client, "reopen", [1, 2, 3], status="discarded")
    assert _count(page) == "2" and "1 of the selected is not discarded" in text(page) and "3 (open)" in text(page)
    done = text(_post(client, page, "reopen", 2, [1, 2, 3], status="discarded"))
    assert "Reopened 2 dead letters" in done and "Left as they were (1, not discarded): 3 (open)" in done
    assert _ids(text(client.get("/dead-letters"))) == [4, 3, 2, 1]
    page = _confirm(client, "reprocess", [3, 4])
    assert _count(page) == "2"
    response = _post(client, page, "reprocess", 2, [3, 4])
    assert "Reprocessed 2 dead letters in run #2" in text(response) and "2 dead letters" in text(client.get("/runs/2"))


def test_all_matching_bulk_reopen(client, conn, write):
    load(conn, write, BAD)
    page = _confirm(client, "discard", all="1", error="invalid_value")
    assert _count(page) == "2"
    _post(client, page, "discard", 2, error="invalid_value")
    listed = text(client.get("/dead-letters?status=discarded"))
    assert 'name="action" value="reopen"' in listed and "all 2 matching this filter" in listed
    page = _confirm(client, "reopen", all="1", status="discarded")
    assert _count(page) == "2"
    assert "Reopened 2 dead letters" in text(_post(client, page, "reopen", 2, status="discarded"))
    assert _ids(text(client.get("/dead-letters?status=discarded"))) == []
    assert [e["detail"]["ids"] for e in entries(client.application.extensions["sqlalchemy"].engine, "reopen")] \
        == [[1, 2]]  # one audit entry for the bulk reopen


def test_a_selection_that_changed_since_it_was_counted_is_refused(client, conn, write):
    load(conn, write, BAD)
    page = _confirm(client, "discard", [1, 2, 3])
    assert _count(page) == "3"
    client.post("/dead-letters/2/discard", data={"csrf_token": token(client, "/dead-letters/2")})
    refused = text(_post(client, page, "discard", 3, [1, 2, 3]))
    assert "The selection changed: it now holds 2 open dead letters, not 3" in refused
    assert _ids(text(client.get("/dead-letters"))) == [4, 3, 1]  # nothing was done
    all_page = _confirm(client, "reprocess", all="1")
    client.post("/dead-letters/1/discard", data={"csrf_token": token(client, "/dead-letters/1")})
    assert "The selection changed" in text(_post(client, all_page, "reprocess", 3))


def test_ids_of_another_dataset_or_of_none_are_refused(client, app, conn, write):
    load(conn, write, BAD)
    name = "triage_orders"
    assert create(client, name).status_code == 303
    upload(client, app, name, [{"order_id": "o1", "customer": "acme", "total": "x", "updated_at": GOOD_TS}])
    page = _confirm(client, "discard", [1, 5])  # 5 is the orders dataset's dead letter
    assert page.status_code == 400 and "no dead letter 5 in dataset events" in text(page)
    assert 'name="confirm"' not in text(page)
    assert _confirm(client, "discard", [999]).status_code == 400
    assert _confirm(client, "discard", ["1x"]).status_code == 400
    assert _confirm(client, "discard", list(range(1, 502))).status_code == 400  # more than 500 at a time
    csrf = _CSRF.search(text(_confirm(client, "discard", [1]))).group(1)
    posted = client.post(f"/dead-letters/bulk?dataset={name}", data={
        "csrf_token": csrf, "action": "discard", "confirm": "1", "ids": ["1"]}, follow_redirects=True)
    assert "no dead letter 1 in dataset " + name in text(posted)
    assert _ids(text(client.get("/dead-letters"))) == [4, 3, 2, 1]


def test_a_view_offers_only_the_bulk_actions_that_can_apply(client, conn, write):
    empty = text(client.get("/dead-letters"))
    assert "No dead letters match" in empty and 'name="action"' not in empty and 'id="selection"' not in empty
    load(conn, write, BAD)
    client.post("/dead-letters/1/edit", data={"csrf_token": token(client, "/dead-letters/1"),
                                              "raw": f'{{"key": "v1", "name": "n", "value": 1, "ts": "{GOOD_TS}"}}'})
    resolved = text(client.get("/dead-letters?status=resolved"))
    assert _ids(resolved) == [1] and 'name="action"' not in resolved and 'name="ids"' not in resolved
    open_view = text(client.get("/dead-letters"))
    assert 'value="reprocess"' in open_view and 'value="discard"' in open_view and 'value="reopen"' not in open_view
    assert 'name="action"' not in text(client.get("/dead-letters?status=discarded"))  # none discarded: empty


@pytest.mark.parametrize("status, expected", [
    ("open", {"invalid_value": 1, "missing_name": 1, "invalid_timestamp": 1}),
    ("resolved", {"invalid_value": 1}),
    ("discarded", {"missing_name": 1}),
    ("all", {"invalid_value": 2, "missing_name": 2, "invalid_timestamp": 1}),
])
def test_counts_per_error_code_follow_the_status_filter(client, conn, write, status, expected):
    load(conn, write, BAD + [{"key": "m2", "value": 1, "ts": GOOD_TS}])  # 5: missing_name
    client.post("/dead-letters/1/edit", data={"csrf_token": token(client, "/dead-letters/1"),
                                              "raw": f'{{"key": "v1", "name": "n", "value": 1, "ts": "{GOOD_TS}"}}'})
    client.post("/dead-letters/3/discard", data={"csrf_token": token(client, "/dead-letters/3")})
    body = text(client.get(f"/dead-letters?status={status}"))
    label = "any status" if status == "all" else status
    chips = re.search(rf'By error code, {label}:</span>(.*?)</div>', body, re.DOTALL)
    assert chips, f"no 'By error code, {label}:' label"
    shown = {e: int(n) for e, n in re.findall(r'>([a-z_]+) <b>(\d+)</b></a>', chips.group(1))}
    assert shown == expected  # codes with none in the status are not offered


def test_next_open_one_goes_to_the_right_letter_and_keeps_the_filter(client, conn, write):
    load(conn, write, BAD + [{"key": "v3", "name": "n", "value": "q", "ts": GOOD_TS}])  # 5: invalid_value
    listed = text(client.get("/dead-letters?error=invalid_value"))
    assert _ids(listed) == [5, 2, 1] and 'href="/dead-letters/5?error=invalid_value"' in listed
    page = text(client.get("/dead-letters/5?error=invalid_value"))
    assert 'id="back-to-list" href="/dead-letters?error=invalid_value"' in page
    response = client.post("/dead-letters/5/discard?error=invalid_value",
                           data={"csrf_token": token(client, "/dead-letters/5"), "reason": "dup"})
    assert response.headers["Location"] == "/dead-letters/5?error=invalid_value"
    after = text(client.get(response.headers["Location"]))
    assert re.search(r'id="next-open" class="button primary" href="/dead-letters/2\?error=invalid_value">'
                     r'Next open one →', after)
    # From the oldest, the next is the newest open one of the filter (not itself).
    oldest = text(client.get("/dead-letters/1?error=invalid_value"))
    assert 'id="next-open" class="button " href="/dead-letters/2?error=invalid_value"' in oldest
    # Without a filter the next one may be of any error code.
    assert 'href="/dead-letters/4">Next open one' in text(client.get("/dead-letters/5"))


def test_retry_hints_for_a_future_timestamp_and_a_missing_field(client, conn, write):
    future = (utc_now() + timedelta(days=3)).replace(microsecond=0)
    load(conn, write, [{"key": "f1", "name": "n", "value": 1, "ts": future.strftime("%Y-%m-%dT%H:%M:%SZ")},
                       {"key": "m1", "value": 1, "ts": GOOD_TS}, {"key": "ok", "name": "n", "value": 1, "ts": "x"}])
    until = (future - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    page = text(client.get("/dead-letters/1"))
    assert f"Retry hint: a retry will fail the same way until {until} (UTC)." in page
    page = text(client.get("/dead-letters/2"))
    assert "Retry hint: an edit must supply name; Reprocess as it is will fail again." in page
    assert "an edit must fix timestamp" in text(client.get("/dead-letters/3"))
    listed = text(client.get("/dead-letters"))
    assert listed.count('class="retry-hint"') == 3 and ">not yet</span>" in listed and ">edit first</span>" in listed
    # Once the letter is not open, a retry is not offered and neither is the hint.
    client.post("/dead-letters/2/discard", data={"csrf_token": token(client, "/dead-letters/2")})
    assert "Retry hint" not in text(client.get("/dead-letters/2"))


def test_a_future_timestamp_whose_time_has_come_has_no_hint():
    from app.pipeline import retry_hint

    letter = {"status": "open", "error": "future_timestamp",
              "detail": "ts 2030-01-02T00:00:00 is later than now plus the tolerance (2030-01-01T00:00:00)"}
    tolerance = timedelta(days=1)
    assert retry_hint(letter, utc_now().replace(year=2029), tolerance).startswith("a retry will fail")
    from datetime import datetime
    assert retry_hint(letter, datetime(2030, 1, 1, 0, 0, 1), tolerance) is None


def test_api_bulk_reopen_by_ids_and_by_filter(client, conn, write, make_user, app):
    load(conn, write, BAD)
    assert client.post("/api/dead-letters/discard", json={"confirm": 4}).get_json()["count"] == 4
    assert client.post("/api/dead-letters/reopen", json={"ids": [1, 2], "confirm": 3}).status_code == 409
    done = client.post("/api/dead-letters/reopen", json={"ids": [1, 2], "confirm": 2})
    assert done.status_code == 200 and done.get_json() == {"count": 2, "run": None}
    conflict = client.post("/api/dead-letters/reopen", json={"ids": [2, 3], "confirm": 1})
    assert conflict.status_code == 409 and "2 (open)" in conflict.get_json()["error"]["message"]
    assert client.post("/api/dead-letters/reopen", json={"ids": [99], "confirm": 1}).status_code == 404
    assert client.post("/api/dead-letters/reopen", json={"ids": [3], "filter": {}, "confirm": 1}).status_code == 422
    stale = client.post("/api/dead-letters/reopen", json={"filter": {"error": "invalid_value"}, "confirm": 2})
    assert stale.status_code == 409 and stale.get_json()["error"]["count"] == 0
    by_filter = client.post("/api/dead-letters/reopen", json={"filter": {}, "confirm": 2})
    assert by_filter.get_json()["count"] == 2
    assert [d["status"] for d in client.get("/api/dead-letters?status=open").get_json()["items"]] == ["open"] * 4
    assert [e["object_id"] for e in entries(app.extensions["sqlalchemy"].engine, "reopen")] == \
        ["2 dead letters", "2 dead letters"]
    viewer = app.test_client()
    sign_in_as(viewer, make_user("watcher", "viewer"))
    assert viewer.post("/api/dead-letters/reopen", json={"filter": {}, "confirm": 0}).status_code == 403
    assert "/dead-letters/reopen" in client.get("/api/openapi.json").get_data(as_text=True)


def test_the_api_caps_a_list_of_ids_as_the_pages_do():
    from app.pipeline.dead_letters import MAX_SELECTION
    from app.web.api import schemas

    assert schemas.MAX_SELECTION == MAX_SELECTION
