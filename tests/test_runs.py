"""The run service in one process: submit, queue order, cancel, retry, progress, housekeeping, /healthz."""
import gzip
import hashlib
import io
import json
import os
import threading
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from app.models import Run
from app.pipeline import InputError, Options, TooLarge
from app.pipeline.validate import utc_now
from app.runs import RunNotFound, RunService, RunStateError

from .conftest import SAMPLE_INPUT, SAMPLE_SUMMARY


@pytest.fixture
def svc(app):
    return app.extensions["sluice_runs"]


def records(n, start=0, *, minute=0, name="n"):
    """`n` valid records with keys k{start}..; their ts rise one second per record."""
    return [{"key": f"k{i}", "name": f"{name}{i}", "value": i,
             "ts": f"2024-01-01T00:{minute:02d}:{i % 60:02d}"} for i in range(start, start + n)]


def upload(svc, data, name="f.json", **kwargs) -> int:
    if not isinstance(data, bytes):
        data = json.dumps(data).encode()
    return svc.submit(io.BytesIO(data), name, kind=kwargs.pop("kind", "upload"),
                      options=kwargs.pop("options", None))


def run_row(svc, run_id):
    with svc.engine.connect() as conn:
        return conn.execute(select(Run).where(Run.id == run_id)).one()


def count(svc, sql):
    with svc.engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_submit_stores_by_sha256_and_queues_then_drain_gives_the_seed_summary(svc, app):
    data = SAMPLE_INPUT.read_bytes()
    run_id = upload(svc, data, "sample_input.json")
    run = run_row(svc, run_id)
    digest = hashlib.sha256(data).hexdigest()
    assert (run.status, run.kind, run.source_name, run.source_size, run.source_sha256) == (
        "queued", "upload", "sample_input.json", len(data), digest)
    stored = Path(run.file_path)
    assert stored == Path(app.config["SLUICE_UPLOAD_DIR"]) / digest and stored.read_bytes() == data
    assert [p.name for p in stored.parent.iterdir()] == [digest]  # no temporary file left behind

    assert svc.drain() == [run_id]
    run = run_row(svc, run_id)
    expected = json.loads(SAMPLE_SUMMARY.read_text())
    assert run.status == "succeeded"
    assert (run.inserted + run.updated, run.rejected, run.lineage_entries, run.watermark_after) == (
        expected["loaded"], expected["rejected"], expected["lineage_entries"], expected["watermark"])
    assert svc.progress(run_id) is None  # progress is only there while the run goes


def test_same_file_again_is_accepted_and_names_the_earlier_run(svc):
    first = upload(svc, records(3))
    second = upload(svc, records(3))
    a, b = run_row(svc, first), run_row(svc, second)
    assert b.file_path == a.file_path and b.same_file_run_id == first
    assert svc.drain() == [first, second]


def test_gzip_upload_is_accepted(svc):
    run_id = upload(svc, gzip.compress(json.dumps(records(4)).encode()), "f.json.gz")
    svc.drain()
    assert run_row(svc, run_id).inserted == 4


def test_not_json_is_refused_before_anything_is_recorded(svc, app):
    with pytest.raises(InputError, match="does not start like JSON"):
        upload(svc, b"PK\x03\x04 a zip file", "f.zip")
    assert count(svc, "SELECT count(*) FROM runs") == 0
    assert list(Path(app.config["SLUICE_UPLOAD_DIR"]).iterdir()) == []


def test_upload_over_the_limit_is_refused_and_not_kept(db_url, tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "small"))
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "SECRET_KEY": "t",
                      "SLUICE_UPLOAD_DIR": str(tmp_path / "up"), "SLUICE_EMBEDDED_WORKER": False,
                      "SLUICE_MAX_UPLOAD_BYTES": 10_000})
    svc = app.extensions["sluice_runs"]
    with pytest.raises(TooLarge, match="upload size limit"):
        upload(svc, records(1000))
    assert count(svc, "SELECT count(*) FROM runs") == 0
    assert list((tmp_path / "up").iterdir()) == []
    assert run_row(svc, upload(svc, records(3))).status == "queued"  # under the limit: accepted
    svc.engine.dispose()


def test_cli_and_reprocess_kinds_are_not_queue_kinds(svc):
    with pytest.raises(ValueError):
        upload(svc, records(1), kind="cli")


def test_runs_execute_in_queue_order_and_apply_in_that_order(svc):
    ids = [upload(svc, records(5, name=f"v{n}-"), f"f{n}.json") for n in range(3)]
    assert svc.drain() == ids
    rows = [run_row(svc, i) for i in ids]
    assert [r.applied_seq for r in rows] == sorted(r.applied_seq for r in rows)
    # At the watermark a record is processed again: the last file queued gave k4 its name.
    assert count(svc, "SELECT name FROM target WHERE key = 'k4'") == "v2-4"


def test_cancel_a_queued_run_at_once(svc):
    run_id = upload(svc, records(3))
    assert svc.cancel(run_id) == "cancelled"
    run = run_row(svc, run_id)
    assert (run.status, run.error) == ("cancelled", "cancelled by request") and run.finished_at
    assert svc.drain() == []
    assert count(svc, "SELECT count(*) FROM target") == 0
    with pytest.raises(RunStateError, match="only a queued or running run"):
        svc.cancel(run_id)
    with pytest.raises(RunNotFound):
        svc.cancel(9999)


def test_cancel_of_a_running_run_is_a_clean_rollback(svc):
    upload(svc, records(10))
    svc.drain()
    before = count(svc, "SELECT count(*) FROM lineage")
    run_id = upload(svc, records(50, 100))
    assert svc.claim_next() == run_id
    assert svc.cancel(run_id) == "running"  # a running run is asked to stop
    assert svc.execute(run_id) is None
    run = run_row(svc, run_id)
    assert (run.status, run.error) == ("cancelled", "cancelled by request")
    assert count(svc, "SELECT count(*) FROM target") == 10
    assert count(svc, "SELECT count(*) FROM lineage") == before
    assert svc.retry(run_id)  # a cancelled run can be retried


def test_retry_of_a_failed_run_is_a_new_linked_run_of_the_same_file(svc):
    bad = upload(svc, b'[{"key": "a", "name": "x", "value": 1, "ts": "2024-01-01T00:00:00"}, {"key": ')
    svc.drain()
    failed = run_row(svc, bad)
    assert failed.status == "failed" and "line" in failed.error
    retry_id = svc.retry(bad)
    retry = run_row(svc, retry_id)
    assert (retry.kind, retry.retry_of_id, retry.file_path, retry.source_sha256, retry.status) == (
        "retry", bad, failed.file_path, failed.source_sha256, "queued")
    assert svc.drain() == [retry_id]
    assert run_row(svc, retry_id).status == "failed"


def test_retry_keeps_the_options(svc):
    run_id = upload(svc, records(3), options=Options(dry_run=True, max_reject_rate=0.5))
    svc.cancel(run_id)
    retry = run_row(svc, svc.retry(run_id))
    assert json.loads(retry.options) == {"ignore_watermark": False, "max_reject_rate": 0.5, "dry_run": True}


def test_retry_is_refused_for_a_succeeded_or_queued_run(svc):
    run_id = upload(svc, records(2))
    with pytest.raises(RunStateError, match="only a failed or cancelled"):
        svc.retry(run_id)
    svc.drain()
    with pytest.raises(RunStateError, match="only a failed or cancelled"):
        svc.retry(run_id)
    with pytest.raises(RunNotFound):
        svc.retry(12345)


def test_housekeeping_removes_files_after_retention_and_retry_then_says_so(svc, app):
    old = upload(svc, records(2))
    svc.cancel(old)
    path = Path(run_row(svc, old).file_path)
    assert svc.housekeep() == []  # within the retention: kept
    later = utc_now() + timedelta(hours=app.config["SLUICE_FILE_RETENTION_HOURS"] + 1)
    assert svc.housekeep(now=later) == [str(path)]
    assert not path.exists()
    run = run_row(svc, old)
    assert run.file_removed_at and (run.source_name, run.source_sha256) != (None, None)
    with pytest.raises(RunStateError, match="no longer stored"):
        svc.retry(old)


def test_housekeeping_keeps_a_file_another_unfinished_run_uses(svc, app):
    done = upload(svc, records(2))
    svc.cancel(done)
    waiting = upload(svc, records(2))  # same content, same stored file, still queued
    later = utc_now() + timedelta(hours=app.config["SLUICE_FILE_RETENTION_HOURS"] + 1)
    assert svc.housekeep(now=later) == []
    assert Path(run_row(svc, waiting).file_path).exists()
    assert svc.drain() == [waiting]
    assert run_row(svc, waiting).status == "succeeded"


def test_progress_reporter_writes_a_readable_file_and_raises_when_cancelled(svc, tmp_path):
    cancelled = threading.Event()
    reporter = svc.execution.reporter(77, 1000, cancelled)
    reporter("reading", 20000, 400)
    assert svc.progress(77) == {"run_id": 77, "phase": "reading", "records": 20000, "skipped": 0, "rejected": 0,
                                "bytes_read": 400, "file_size": 1000, "updated_at": svc.progress(77)["updated_at"]}
    reporter("applying", 20000, 0)  # a phase change is written at once; bytes read stay at their maximum
    assert (svc.progress(77)["phase"], svc.progress(77)["bytes_read"]) == ("applying", 400)
    cancelled.set()
    with pytest.raises(Exception) as info:
        reporter("committing", 20000, 0)
    assert type(info.value).__name__ == "RunCancelled"
    reporter("done", 20000, 0)  # after the commit a cancel is too late and must not undo the run


def test_a_run_of_a_dead_worker_is_marked_interrupted_and_can_be_retried(svc):
    run_id = upload(svc, records(3, minute=5))
    with svc.engine.begin() as conn:  # claimed by a process on this host whose lock file is gone
        conn.execute(update(Run).where(Run.id == run_id).values(
            status="running", worker=f"{svc._host}:1:deadbeef0000", heartbeat_at="2024-01-01T00:00:00"))
    own = upload(svc, records(2, 50))
    assert svc.claim_next() is None  # one run at a time: the dead one still holds the queue
    assert svc.recover() == [run_id]
    run = run_row(svc, run_id)
    assert (run.status, run.error) == ("failed", "interrupted")
    retry_id = svc.retry(run_id)
    assert svc.drain() == [own, retry_id]
    assert count(svc, "SELECT count(*) FROM target") == 5


def test_a_live_worker_is_not_interrupted(svc):
    run_id = upload(svc, records(3))
    assert svc.claim_next() == run_id  # this process holds its lock file: alive
    assert svc.recover() == []
    assert run_row(svc, run_id).worker == svc.worker_id()
    svc.execute(run_id)
    assert run_row(svc, run_id).status == "succeeded"


def test_a_worker_on_another_host_is_judged_by_its_lease(svc):
    fresh, stale = upload(svc, records(1)), upload(svc, records(1, 5))
    now = utc_now()
    with svc.engine.begin() as conn:
        for run_id, beat in ((fresh, now), (stale, now - svc.lease - timedelta(seconds=1))):
            conn.execute(update(Run).where(Run.id == run_id).values(
                status="running", worker=f"elsewhere:{run_id}:abc",
                heartbeat_at=beat.strftime("%Y-%m-%dT%H:%M:%S")))
    assert svc.recover() == [stale]


def test_healthz_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_503_when_the_database_does_not_answer(tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "inst"))
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "SLUICE_EMBEDDED_WORKER": False,
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}",
                      "SLUICE_UPLOAD_DIR": str(tmp_path / "up")})
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error" and "unable to open database file" in body["database"]


def test_service_is_registered_and_no_thread_in_tests(app, executor):
    svc = app.extensions["sluice_runs"]
    assert isinstance(svc, RunService)
    # Embedded without its thread (tests drain runs themselves), or the queue executor, which starts none.
    if executor == "queue":
        from app.runs.taskqueue import QueueExecutor  # procrastinate is imported only for the queue

        assert isinstance(svc.executor, QueueExecutor)
    else:
        assert svc.executor is None


def test_housekeeping_keeps_a_file_uploaded_again_before_its_new_run_is_recorded(svc, app):
    old = upload(svc, records(2))
    svc.cancel(old)
    path = Path(run_row(svc, old).file_path)
    later = utc_now() + timedelta(hours=app.config["SLUICE_FILE_RETENTION_HOURS"] + 1)
    # The same content arrives again at `later`: stored (fresh mtime), its run not recorded yet.
    stamp = later.replace(tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    assert svc.housekeep(now=later) == []
    assert path.exists() and run_row(svc, old).file_removed_at is None


def test_housekeeping_never_removes_a_file_it_did_not_store(svc, app, conn, write):
    from app.pipeline import run_file

    own = write("mine.json", json.dumps(records(2)))
    run_file(conn, own, kind="cli")  # a command-line run records the user's own path
    later = utc_now() + timedelta(hours=app.config["SLUICE_FILE_RETENTION_HOURS"] + 1)
    assert svc.housekeep(now=later) == []
    assert own.exists()
