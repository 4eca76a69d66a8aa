"""A run is atomic (SPEC §2): a failure leaves target, lineage, dead letters and watermark as they were."""

import pytest

import app.pipeline.watermark
from app.pipeline import RunCancelled, RunFailed, run_file

from .pipeline_helpers import fetch, load, rec, snapshot, target

FIRST = [
    rec(key="a", value=1, ts="2025-01-15T12:00:00"),
    rec(key="b", value=1, ts="2025-01-15T12:00:00"),
    rec(key="bad", value="abc", ts="2025-01-15T12:00:00"),
]
# A second file that would insert, update, leave one unchanged, count a sighting, add a dead letter
# and move the watermark.
SECOND = [
    rec(key="a", value=2, ts="2025-01-16T00:00:00"),
    rec(key="b", value=1, ts="2025-01-15T12:00:00"),
    rec(key="c", value=1, ts="2025-01-17T00:00:00"),
    rec(key="bad", value="abc", ts="2025-01-15T12:00:00"),
    rec(key="worse", value=None, ts="2025-01-16T00:00:00"),
]


def run_row(conn, run_id):
    return fetch(conn, "SELECT status, error, finished_at FROM runs WHERE id = :r", r=run_id)[0]


def fail_on(phase_to_fail, exc):
    def progress(phase, records, nbytes):
        if phase == phase_to_fail:
            raise exc

    return progress


@pytest.mark.parametrize("phase", ["reading", "classifying", "applying", "committing"])
def test_a_failure_in_any_phase_changes_nothing(conn, write, phase):
    load(conn, write, FIRST, name="first.json")
    before = snapshot(conn)
    with pytest.raises(RunFailed) as failed:
        load(conn, write, SECOND, progress=fail_on(phase, RuntimeError("disk on fire")))
    assert str(failed.value) == "RuntimeError: disk on fire"
    status, error, finished = run_row(conn, failed.value.run_id)
    assert (status, error) == ("failed", "RuntimeError: disk on fire") and finished
    assert snapshot(conn) == before
    # Staging kept nothing of the failed run: the same file now loads in full on the same connection.
    summary = load(conn, write, SECOND)
    assert (
        summary["inserted"],
        summary["updated"],
        summary["unchanged"],
        summary["rejected"],
        summary["dead_letters"],
    ) == (1, 1, 1, 2, 1)
    assert fetch(conn, "SELECT sightings FROM dead_letters WHERE key = 'bad'") == [(2,)]


def test_a_failure_while_moving_the_watermark_rolls_back_the_upsert(conn, write, monkeypatch):
    load(conn, write, FIRST, name="first.json")
    before = snapshot(conn)

    def broken(*args, **kwargs):
        raise OSError("the watermark table is gone")

    monkeypatch.setattr(app.pipeline.watermark, "advance", broken)
    with pytest.raises(RunFailed, match="OSError: the watermark table is gone") as failed:
        load(conn, write, SECOND)
    assert run_row(conn, failed.value.run_id)[:2] == ("failed", "OSError: the watermark table is gone")
    assert snapshot(conn) == before
    assert target(conn)["a"] == ("n", 1.0, "2025-01-15T12:00:00")


def test_a_cancelled_run_changes_nothing_and_says_so(conn, write):
    load(conn, write, FIRST, name="first.json")
    before = snapshot(conn)
    with pytest.raises(RunFailed, match="cancelled by request") as failed:
        load(conn, write, SECOND, progress=fail_on("applying", RunCancelled()))
    assert run_row(conn, failed.value.run_id)[:2] == ("cancelled", "cancelled by request")
    assert snapshot(conn) == before


def test_a_failed_file_is_recorded_with_its_reason_and_the_next_run_works(conn, write):
    load(conn, write, FIRST, name="first.json")
    before = snapshot(conn)
    with pytest.raises(RunFailed) as failed:
        run_file(
            conn,
            write("broken.json", '[{"key": "x", "name": "n", "value": 1, "ts": "2025-01-16T00:00:00"}, {'),
        )
    assert run_row(conn, failed.value.run_id)[0] == "failed"
    assert "invalid JSON at line 1" in run_row(conn, failed.value.run_id)[1]
    assert snapshot(conn) == before
    runs = fetch(conn, "SELECT status, input_records, inserted FROM runs ORDER BY id")
    assert [r.status for r in runs] == ["succeeded", "failed"]
    assert load(conn, write, SECOND)["status"] == "succeeded"


def test_progress_is_reported_through_the_phases(conn, write):
    seen = []
    load(conn, write, FIRST, progress=lambda phase, records, nbytes: seen.append((phase, records)))
    phases = [p for p, _ in seen]
    assert phases[0] == "reading" and phases[-1] == "done"
    assert phases.index("classifying") < phases.index("applying") < phases.index("committing")
    assert seen[-1] == ("done", 3)


def temp_tables(conn) -> list:
    if conn.dialect.name == "postgresql":
        sql = "SELECT relname FROM pg_class WHERE relnamespace = pg_my_temp_schema() AND relkind = 'r'"
    else:
        sql = "SELECT name FROM sqlite_temp_master WHERE type = 'table'"
    return fetch(conn, sql)


def test_staging_holds_nothing_once_a_run_ends(conn, write):
    from app.pipeline import Options

    load(conn, write, FIRST)
    assert temp_tables(conn) == []
    load(conn, write, SECOND, options=Options(dry_run=True))
    assert temp_tables(conn) == []
    with pytest.raises(RunFailed):
        load(conn, write, SECOND, progress=fail_on("committing", RuntimeError("late")))
    assert temp_tables(conn) == []
    with pytest.raises(RunFailed):
        load(conn, write, [rec(value="x")] * 3, options=Options(max_reject_rate=0.1))
    assert temp_tables(conn) == []


@pytest.mark.parametrize("exc", [RuntimeError("progress file gone"), RunCancelled()], ids=["error", "cancel"])
def test_a_progress_failure_after_the_commit_does_not_mark_the_run_failed(conn, write, exc):
    summary = load(conn, write, FIRST, progress=fail_on("done", exc))
    assert (summary["status"], summary["inserted"]) == ("succeeded", 2)
    assert run_row(conn, summary["run_id"])[:2] == ("succeeded", None)
    assert set(target(conn)) == {"a", "b"}
