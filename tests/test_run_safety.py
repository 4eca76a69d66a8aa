"""A run's outcome is what its COMMIT says, only its owner commits, every run can be cancelled (issue 8).

Defects 4 (a failure after COMMIT), 5 (ownership of the final update), 6 (cancel of `cli` and
`reprocess` runs, cancel racing a claim), 15 (restart only when the watermark decided skips) and
18 (a retried `cli` run whose file changed).
"""
import io
import json

import pytest
from sqlalchemy import select, text, update

import app.pipeline.run as run_module
from app.models import Run
from app.pipeline import Options, RunFailed, run_file
from app.pipeline import watermark as wm
from app.runs import ProgressReporter, RunStateError
from app.runs.queue import RunQueue

from .pipeline_helpers import rec, snapshot


@pytest.fixture
def svc(app):
    return app.extensions["sluice_runs"]


def records(n, start=0, day=15):
    return [rec(key=f"k{i}", name=f"n{i}", value=i, ts=f"2025-01-{day:02d}T00:{i // 60 % 60:02d}:{i % 60:02d}")
            for i in range(start, start + n)]


def submit(svc, data) -> int:
    return svc.submit(io.BytesIO(json.dumps(data).encode()), "f.json", kind="upload")


def row(svc, run_id):
    with svc.engine.connect() as conn:
        return conn.execute(select(Run).where(Run.id == run_id)).one()


def scalar(svc, sql, **params):
    with svc.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def on_phase(monkeypatch, phase, action):
    """Make every progress reporter call `action(reporter)` once, the first time it reports `phase`."""
    original, done = ProgressReporter.__call__, []

    def call(self, name, records_read, nbytes):
        if name == phase and not done:
            done.append(True)
            action(self)
        return original(self, name, records_read, nbytes)

    monkeypatch.setattr(ProgressReporter, "__call__", call)
    return done


def fail_after_the_first(monkeypatch, module, name):
    """Let `module.name` work once (before the run applies), then raise as a lost connection would."""
    original, calls = getattr(module, name), []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise ConnectionError("server closed the connection unexpectedly")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, broken)
    return calls


# -- defect 4: what follows COMMIT never fails the run ------------------------------------------

def test_a_failure_after_the_commit_leaves_the_run_succeeded_and_applied_once(svc, monkeypatch):
    run_id = submit(svc, records(30))
    # Reading the run back after COMMIT (the connection is lost right then) used to fail the run.
    calls = fail_after_the_first(monkeypatch, run_module, "read_run")
    assert svc.drain() == [run_id]
    assert len(calls) >= 1
    run = row(svc, run_id)
    assert (run.status, run.error, run.inserted) == ("succeeded", None, 30)
    assert run.applied_seq == 1 and run.lock_seconds is not None  # recorded by the committed UPDATE
    assert scalar(svc, "SELECT count(*) FROM target") == 30
    assert scalar(svc, "SELECT count(*) FROM lineage WHERE run_id = :r", r=run_id) == run.lineage_entries
    with pytest.raises(RunStateError, match="only a failed or cancelled run can be retried"):
        svc.retry(run_id)


def test_a_run_that_applied_is_never_marked_failed(svc):
    run_id = submit(svc, records(3))
    svc.drain()
    svc.queue.mark_failed(run_id, "late failure")  # what the generic handler does after a lost COMMIT
    with svc.engine.begin() as conn:  # even if the row looked running again, an applied run stays applied
        conn.execute(update(Run).where(Run.id == run_id).values(status="running"))
    svc.queue.mark_failed(run_id, "late failure")
    assert row(svc, run_id).error is None


# -- defect 5: only the run's owner commits -----------------------------------------------------

def test_a_run_marked_interrupted_while_it_reads_rolls_its_apply_back(svc, monkeypatch):
    first = submit(svc, records(5))
    svc.drain()
    with svc.engine.connect() as conn:
        before = snapshot(conn)
    run_id = submit(svc, records(40, 100, day=16))

    def lease_expired(reporter):  # what recovery on another host does once the lease ran out
        with svc.engine.begin() as conn:
            conn.execute(update(Run).where(Run.id == reporter.run_id).values(
                status="failed", error="interrupted", finished_at="2025-01-20T00:00:00"))

    on_phase(monkeypatch, "reading", lease_expired)
    assert svc.claim_next() == run_id
    assert svc.execute(run_id) is None
    run = row(svc, run_id)
    assert (run.status, run.error, run.applied_seq) == ("failed", "interrupted", None)
    with svc.engine.connect() as conn:
        assert snapshot(conn) == before
    assert row(svc, first).applied_seq == 1
    retry = svc.retry(run_id)  # the retry is the one that applies
    assert svc.drain() == [retry]
    assert scalar(svc, "SELECT count(*) FROM lineage WHERE run_id = :r", r=retry) == row(svc, retry).lineage_entries
    assert scalar(svc, "SELECT count(*) FROM target") == 45


# -- defect 6: every running run can be cancelled -----------------------------------------------

def cancel_and_wait(svc):
    def action(reporter):
        assert svc.cancel(reporter.run_id) == "running"
        assert reporter.cancelled.wait(30), "the watcher did not pick the cancel up"
    return action


def test_a_cli_run_can_be_cancelled(app, svc, runner, write, monkeypatch):
    path = write("big.json", json.dumps(records(200)))
    done = on_phase(monkeypatch, "reading", cancel_and_wait(svc))
    result = runner.invoke(args=["etl", "run", str(path)])
    assert done and result.exit_code == 1, result.output
    assert "run 1 failed: cancelled by request" in result.output
    run = row(svc, 1)
    assert (run.kind, run.status, run.error) == ("cli", "cancelled", "cancelled by request")
    assert scalar(svc, "SELECT count(*) FROM target") == 0


def test_a_reprocess_run_can_be_cancelled(svc, monkeypatch, write):
    with svc.engine.connect() as conn:
        run_file(conn, write("bad.json", json.dumps([rec(key="a", value="abc")])))
    dl_id = scalar(svc, "SELECT id FROM dead_letters")
    on_phase(monkeypatch, "reading", cancel_and_wait(svc))
    with pytest.raises(RunFailed, match="cancelled by request") as failed:
        svc.reprocess([dl_id], edited=rec(key="a", value=1))
    assert (row(svc, failed.value.run_id).kind, row(svc, failed.value.run_id).status) == ("reprocess", "cancelled")
    assert scalar(svc, "SELECT status FROM dead_letters WHERE id = :i", i=dl_id) == "open"
    assert scalar(svc, "SELECT count(*) FROM target") == 0


def test_a_cancel_that_loses_the_race_with_a_claim_asks_the_running_run_to_stop(svc, monkeypatch):
    run_id = submit(svc, records(5))
    assert svc.claim_next() == run_id
    real, seen = RunQueue._status, []

    def read_before_the_claim(self, conn, rid):  # the cancel read the row just before the claim committed
        seen.append(rid)
        return "queued" if len(seen) == 1 else real(self, conn, rid)

    monkeypatch.setattr(RunQueue, "_status", read_before_the_claim)
    assert svc.cancel(run_id) == "running"
    assert row(svc, run_id).cancel_requested
    assert svc.execute(run_id) is None
    assert (row(svc, run_id).status, scalar(svc, "SELECT count(*) FROM target")) == ("cancelled", 0)


# -- defect 15: restart only when the watermark decided what was skipped --------------------------

def move_watermark(engine, value):
    def progress(phase, records_read, nbytes):
        readings.append((phase, records_read, nbytes))
        if phase == "reading" and not moved:
            moved.append(True)
            with engine.connect() as other:
                wm.set_value(other, value, via="test")

    readings, moved = [], []
    return progress, readings


def test_a_backfill_whose_watermark_moves_is_read_once(conn, engine, write):
    run_file(conn, write("first.json", json.dumps([rec(key="old", ts="2025-01-10T00:00:00")])))
    progress, seen = move_watermark(engine, "2025-01-20T00:00:00")
    summary = run_file(conn, write("backfill.json", json.dumps(records(20, day=5))),
                       options=Options(ignore_watermark=True), progress=progress)
    assert summary["status"] == "succeeded" and summary["inserted"] == 20
    assert seen.count(("reading", 0, 0)) == 1  # one reading of the file, not a restart
    # Applied and advanced from the value it found under the lock, never back to an older one.
    assert (summary["watermark_before"], summary["watermark"]) == ("2025-01-20T00:00:00", "2025-01-20T00:00:00")


def test_a_reprocess_whose_watermark_moves_is_read_once(svc, monkeypatch, write):
    with svc.engine.connect() as conn:
        run_file(conn, write("bad.json", json.dumps([rec(key="a", value="abc", ts="2025-01-10T00:00:00")])))
    dl_id = scalar(svc, "SELECT id FROM dead_letters")
    starts = []

    def action(reporter):
        with svc.engine.connect() as other:
            wm.set_value(other, "2025-01-20T00:00:00", via="test")

    original = ProgressReporter.__call__

    def count_starts(self, name, records_read, nbytes):
        if (name, records_read, nbytes) == ("reading", 0, 0):
            starts.append(1)
        return original(self, name, records_read, nbytes)

    monkeypatch.setattr(ProgressReporter, "__call__", count_starts)
    on_phase(monkeypatch, "reading", action)
    summary = svc.reprocess([dl_id], edited=rec(key="a", value=1, ts="2025-01-10T00:00:00"))
    assert (summary["status"], summary["inserted"], len(starts)) == ("succeeded", 1, 1)
    assert scalar(svc, "SELECT status FROM dead_letters WHERE id = :i", i=dl_id) == "resolved"


# -- defect 18: a retried `cli` run refuses a file that changed ------------------------------------

def test_a_retry_of_a_cli_run_whose_file_changed_is_refused(svc, runner, write):
    path = write("mine.json", json.dumps([rec(key="a", value="abc"), rec(key="b")]))
    result = runner.invoke(args=["etl", "run", str(path), "--max-reject-rate", "0.1"])
    assert result.exit_code == 1 and "over the reject threshold" in result.output
    digest = row(svc, 1).source_sha256
    path.write_text(json.dumps([rec(key="c"), rec(key="d")]))  # the user edits the file afterwards
    retry = svc.retry(1)
    assert svc.drain() == [retry]
    run = row(svc, retry)
    assert run.status == "failed"
    assert run.error == (f"the file {path.resolve()} changed since run 1 was recorded (SHA-256 {digest}); "
                         "run it again with flask etl run")
    assert scalar(svc, "SELECT count(*) FROM target") == 0


def test_a_retry_of_an_unchanged_cli_file_runs(svc, runner, write):
    path = write("mine.json", json.dumps([rec(key="a", value="abc"), rec(key="b")]))
    runner.invoke(args=["etl", "run", str(path), "--max-reject-rate", "0.1"])
    retry = svc.retry(1)
    svc.drain()
    assert "over the reject threshold" in row(svc, retry).error  # read again: the same content, the same outcome
