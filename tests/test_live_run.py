"""The live run page's data (issue 11): progress.json of a queued, running and finished run, and a dry
run's would-be rejects kept with its record, on its page and in the API."""
import json
import threading

import pytest
from sqlalchemy import text as sql

from app.runs import ProgressReporter

from .pipeline_helpers import rec
from .test_pages_helpers import text, upload

# A watermark as every page writes it (templates/_macros.html `watermark`).
WATERMARK = '<time class="watermark" datetime="2025-01-15T12:00:00Z">2025-01-15 12:00:00</time>'


@pytest.fixture
def svc(app):
    return app.extensions["sluice_runs"]


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def progress(client, run_id) -> dict:
    response = client.get(f"/runs/{run_id}/progress.json")
    assert response.status_code == 200
    return response.get_json()


def held_at(monkeypatch, phase):
    """Make a run's progress reporter stop once it has written `phase`, until the returned `go` is set."""
    reached, go, original = threading.Event(), threading.Event(), ProgressReporter.__call__

    def call(self, name, records, nbytes):
        original(self, name, records, nbytes)
        if name == phase and not reached.is_set():
            reached.set()
            assert go.wait(60), "the test never let the run go on"

    monkeypatch.setattr(ProgressReporter, "__call__", call)
    return reached, go


# The wording of the embedded executor: with the queue one and no worker, the page says so first
# (test_queue_executor.py).
@pytest.mark.parametrize("executor", ["embedded"])
def test_a_queued_run_says_how_many_runs_are_ahead_and_nothing_it_has_not_seen(client):
    first = upload(client, jsonl([rec(key="a")]), "first.jsonl")
    assert first.status_code == 303
    upload(client, jsonl([rec(key="b")]), "second.jsonl")
    data = progress(client, 2)
    assert (data["status"], data["started_at"], data["watermark_before"], data["progress"]) == (
        "queued", None, None, None)
    assert data["ahead"] == 1 and data["phase_label"] == "waiting for its turn (1 run ahead)"
    assert progress(client, 1)["phase_label"] == "waiting for its turn (next in line)"
    assert data["created_by"] == "admin" and data["kind"] == "upload" and data["input_records"] == 0
    page = text(client.get("/runs/2"))
    assert "waiting for its turn (1 run ahead)" in page and "read when the run starts" in page


def test_a_running_run_shows_its_status_start_watermark_and_counts_so_far(client, svc, monkeypatch):
    upload(client, jsonl([rec(key=f"k{i}", ts="2025-01-15T12:00:00") for i in range(3)]), "first.jsonl")
    svc.drain()  # the watermark is 2025-01-15 12:00:00 now
    late = [rec(key=f"old{i}", ts="2025-01-10T00:00:00") for i in range(4)]
    bad = [rec(key=f"bad{i}", value="abc", ts="2025-01-16T00:00:00") for i in range(2)]
    upload(client, jsonl(late + bad + [rec(key="new", ts="2025-01-16T00:00:00")]), "second.jsonl")
    reached, go = held_at(monkeypatch, "classifying")
    assert svc.claim_next() == 2
    worker = threading.Thread(target=svc.execute, args=(2,), daemon=True)
    worker.start()
    try:
        assert reached.wait(60)
        data = progress(client, 2)
        assert data["status"] == "running" and data["started_at"] and data["finished_at"] is None
        assert data["watermark_before"] == "2025-01-15T12:00:00"
        assert data["phase_label"] == "checking against the table"
        assert data["so_far"] == {"input_records": 7, "skipped": 4, "rejected": 2}
        assert data["progress"]["skipped"] == 4 and data["percent"] == 100
        page = text(client.get("/runs/2"))
        assert '<span class="status running">running</span>' in page and "queued" not in page.split("<main")[1][:4000]
        assert "checking against the table" in page and "Counts so far" in page
        assert f'<span id="run-watermark-before">{WATERMARK}</span>' in page
        assert '<tr data-count="skipped"><th scope="row">Skipped (older than the watermark)</th><td class="n">4</td>' in page
    finally:
        go.set()
        worker.join(60)
    done = progress(client, 2)
    assert (done["status"], done["progress"], done["phase_label"]) == ("succeeded", None, "succeeded")
    assert (done["input_records"], done["skipped"], done["rejected"], done["inserted"], done["loaded"]) == (7, 4, 2, 1, 1)
    assert done["finished_at"] and done["watermark_after"] == "2025-01-16T00:00:00"


def test_a_cancelled_run_shows_the_watermark_it_saw(client, svc, monkeypatch):
    upload(client, jsonl([rec(key="a", ts="2025-01-15T12:00:00")]), "first.jsonl")
    svc.drain()
    upload(client, jsonl([rec(key="b", ts="2025-01-16T00:00:00")]), "second.jsonl")
    assert svc.claim_next() == 2
    svc.cancel(2)
    svc.execute(2)
    data = progress(client, 2)
    assert (data["status"], data["watermark_before"]) == ("cancelled", "2025-01-15T12:00:00")
    assert f'{WATERMARK} <span class="muted">(the watermark it saw; left as it was)</span>' in text(
        client.get("/runs/2"))


def test_a_dry_run_keeps_its_first_would_be_rejects_on_its_page_and_in_the_api(client, svc, engine):
    nasty = rec(key="<b>bold</b>", value="<script>alert(1)</script>")
    huge = rec(key="huge", value="x" * 5000)
    bad = [rec(key=f"bad{i:03d}", value="abc") for i in range(150)]
    upload(client, jsonl([rec(key="fine"), nasty, huge, *bad]), "dry.jsonl", dry_run="y")
    svc.drain()
    page = text(client.get("/runs/1"))
    assert "Records this dry run would have rejected" in page and "The first 100 of 152" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "<code>&lt;b&gt;bold&lt;/b&gt;</code>" in page
    assert "…(truncated: 5,0" in page  # the huge record's raw is cut, and says so
    assert page.count("<tr data-pos=") == 100
    assert '<tr data-count="rejected"><th scope="row">Rejected</th><td class="n">152</td>' in page
    run = client.get("/api/runs/1").get_json()
    rejects = run["dry_run_rejects"]
    assert [r["pos"] for r in rejects] == list(range(2, 102))  # in file order, the first 100
    assert rejects[0]["error"] == "invalid_value" and rejects[0]["key"] == "<b>bold</b>"
    assert json.loads(rejects[0]["raw"]) == nasty and rejects[0]["truncated"] is False
    assert (rejects[1]["truncated"], len(rejects[1]["raw"])) == (True, 2000) and rejects[1]["raw_length"] > 5000
    assert rejects[1]["raw"].startswith('{"key":"huge"')
    with engine.connect() as conn:  # nothing but the run's record was kept
        assert conn.execute(sql("SELECT count(*) FROM dead_letters")).scalar() == 0
    assert client.get("/api/runs").get_json()["items"][0]["dry_run_rejects"] == rejects


def test_a_normal_run_keeps_no_would_be_rejects(client, svc):
    upload(client, jsonl([rec(key="a"), rec(key="b", value="abc")]), "real.jsonl")
    svc.drain()
    assert client.get("/api/runs/1").get_json()["dry_run_rejects"] is None
    page = text(client.get("/runs/1"))
    assert "would have rejected" not in page and "<code>invalid_value</code>" in page  # its real dead letter
    spec = client.get("/api/openapi.json").get_json()
    assert "dry_run_rejects" in spec["components"]["schemas"]["Run"]["required"]


def test_the_time_left_is_estimated_from_the_bytes_read_per_second_once_reading_has_gone_on():
    from app.runs.executor import live_state

    run = {"status": "running", "started_at": "2025-01-15T12:00:00.000000"}
    reading = {"phase": "reading", "records": 500, "skipped": 0, "rejected": 1, "bytes_read": 250,
               "file_size": 1000, "updated_at": "2025-01-15T12:01:00.000000"}
    state = live_state(run, reading)  # a quarter in a minute: three more minutes
    assert (state["percent"], state["time_left_seconds"], state["time_left"]) == (25, 180, "about 3 m 00 s left to read")
    early = live_state(run, {**reading, "updated_at": "2025-01-15T12:00:01.000000"})
    assert (early["percent"], early["time_left"]) == (25, None)  # no estimate in the first seconds
    unknown = live_state(run, {**reading, "file_size": None})
    assert (unknown["percent"], unknown["time_left"], unknown["phase_label"]) == (None, None, "reading the file")
    saving = live_state({**run, "cancel_requested": True}, {**reading, "phase": "applying"})
    assert (saving["time_left"], saving["phase_label"]) == (None, "saving (stopping: cancel requested)")
