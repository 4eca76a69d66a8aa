"""Run history and run pages: paging, filter, chart, everything of SPEC §5, progress, cancel, retry."""
import json
import os
import re

from app.pipeline import Options, create_run

from .conftest import SAMPLE_INPUT
from .test_pages_helpers import text, token, upload

# A watermark as every page writes it (templates/_macros.html `watermark`).
WATERMARK = '<time class="watermark" datetime="2025-01-15T12:00:00Z">2025-01-15 12:00:00</time>'


def _run_ids(body: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-run="(\d+)"', body)]


def test_runs_history_pages_newest_first_to_the_end(client, conn):
    for i in range(120):
        create_run(conn, kind="cli", source_name=f"file-{i}.json")
    seen, url, pages = [], "/runs", 0
    while url and pages < 10:
        body = text(client.get(url))
        seen += _run_ids(body)
        pages += 1
        match = re.search(r'href="([^"]+)" rel="next"', body)
        url = match.group(1).replace("&amp;", "&") if match else None
    assert seen == list(range(120, 0, -1)) and pages == 3
    back = re.search(r'href="([^"]+)" rel="prev"', body).group(1).replace("&amp;", "&")
    assert _run_ids(text(client.get(back))) == list(range(70, 20, -1))


def test_runs_filter_by_status_and_chart(client, app):
    upload(client, SAMPLE_INPUT.read_bytes(), "ok.json")
    upload(client, b"[1, 2,", "broken.json")
    app.extensions["sluice_runs"].drain()
    body = text(client.get("/runs"))
    assert "<svg" in body and "Run #1 (succeeded): 5 loaded, 2 rejected, 0 skipped" in body
    assert _run_ids(text(client.get("/runs?status=failed"))) == [2]
    assert _run_ids(text(client.get("/runs?status=succeeded"))) == [1]
    assert "No runs match.</strong> There are no runs of" in text(client.get("/runs?status=cancelled"))


def test_run_page_shows_everything_and_the_summary_downloads(client, app):
    upload(client, SAMPLE_INPUT.read_bytes(), "sample.json")
    app.extensions["sluice_runs"].drain()
    upload(client, SAMPLE_INPUT.read_bytes(), "again.json")
    app.extensions["sluice_runs"].drain()
    first = text(client.get("/runs/1"))
    sha = re.search(r'<dd class="mono wrap">([0-9a-f]{64})</dd>', first).group(1)
    assert "sample.json" in first and "backfill no" in first
    assert f'<span class="muted">none</span> → {WATERMARK}' in first.replace("&nbsp;", " ")
    assert "<code>missing_key</code>" in first and "<code>invalid_value</code>" in first  # its dead letters
    assert first.count('class="step ') == 12  # the run's 12 lineage entries
    second = text(client.get("/runs/2"))
    assert sha in second and 'as run <a href="/runs/1">#1</a>' in second  # same file note
    response = client.get("/runs/1/summary.json")
    assert "attachment" in response.headers["Content-Disposition"]
    summary = json.loads(response.data)
    assert (summary["input_records"], summary["loaded"], summary["lineage_entries"]) == (7, 5, 12)


def test_progress_json_of_a_queued_run(client, conn):
    run_id = create_run(conn, kind="cli", source_name="x.json")
    data = client.get(f"/runs/{run_id}/progress.json").json
    assert data["status"] == "queued" and data["id"] == run_id
    assert client.get("/runs/99/progress.json").status_code == 404
    page = text(client.get(f"/runs/{run_id}"))
    assert 'id="live"' in page and "run.js" in page


def test_cancel_a_queued_run_then_retry_it(client, app):
    upload(client, SAMPLE_INPUT.read_bytes(), "sample.json")
    response = client.post("/runs/1/cancel", data={"csrf_token": token(client, "/runs/1")})
    assert response.status_code == 303
    page = text(client.get("/runs/1"))
    assert "cancelled" in page and "Retry run" in page
    response = client.post("/runs/1/retry", data={"csrf_token": token(client, "/runs/1")})
    assert response.status_code == 303 and response.headers["Location"].endswith("/runs/2")
    app.extensions["sluice_runs"].drain()
    page = text(client.get("/runs/2"))
    assert "succeeded" in page and 'Retry of</dt><dd><a href="/runs/1">#1</a>' in page
    assert 'Retried by</dt><dd><a href="/runs/2">#2</a>' in text(client.get("/runs/1"))
    again = client.post("/runs/2/retry", data={"csrf_token": token(client, "/runs/1")}, follow_redirects=True)
    assert "cannot be retried" in text(again)


def test_run_page_says_when_the_file_is_gone(client, app, conn):
    upload(client, b"[1, 2,", "broken.json")
    app.extensions["sluice_runs"].drain()
    page = text(client.get("/runs/1"))
    assert "Retry run" in page and "kept" in page
    with conn.begin():
        path = conn.exec_driver_sql("SELECT file_path FROM runs WHERE id = 1").scalar()
    os.remove(path)
    page = text(client.get("/runs/1"))
    assert "no longer stored" in page and "Retry run" not in page


def test_run_actions_refuse_without_csrf(client, conn):
    run_id = create_run(conn, kind="cli", options=Options())
    assert client.post(f"/runs/{run_id}/cancel").status_code == 400
    assert "queued" in text(client.get(f"/runs/{run_id}"))
