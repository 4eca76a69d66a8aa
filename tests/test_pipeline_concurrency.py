"""Runs apply one at a time (SPEC §5): a run that another run overtakes decides again under the lock."""

import json

import pytest

import app.pipeline.load as load_module
from app.pipeline import DeadLetterError, Options, RunFailed, reprocess, run_file

from .pipeline_helpers import fetch, load, rec, target


def overtaken_by(engine, write, records, options=None):
    """A progress callback that, once, applies another file on another connection before this run applies."""
    done = []

    def progress(phase, records_read, nbytes):
        if phase == "waiting for the write lock" and not done:
            done.append(True)
            with engine.connect() as other:
                done.append(run_file(other, write("other.json", json.dumps(records)), options=options))

    return progress, done


def test_a_run_overtaken_by_another_is_classified_again(conn, engine, write):
    load(conn, write, [rec(key="old", ts="2025-01-15T12:00:00")], name="first.json")
    # The other run backfills key "a" without moving the watermark; this run must see "a" as existing.
    progress, other = overtaken_by(
        engine, write, [rec(key="a", value=1, ts="2025-01-01T00:00:00")], Options(ignore_watermark=True)
    )
    summary = load(conn, write, [rec(key="a", value=2, ts="2025-01-16T00:00:00")], progress=progress)
    assert other[1]["inserted"] == 1
    assert (summary["inserted"], summary["updated"]) == (0, 1)
    assert target(conn)["a"] == ("n", 2.0, "2025-01-16T00:00:00")
    assert fetch(
        conn, "SELECT detail FROM lineage WHERE run_id = :r AND step = 'updated'", r=summary["run_id"]
    ) == [("value: 1 → 2; ts: 2025-01-01T00:00:00 → 2025-01-16T00:00:00",)]


def test_a_run_whose_watermark_moved_reads_its_file_again(conn, engine, write):
    load(conn, write, [rec(key="old", ts="2025-01-10T00:00:00")], name="first.json")
    progress, other = overtaken_by(engine, write, [rec(key="b", ts="2025-01-20T00:00:00")])
    summary = load(
        conn,
        write,
        [rec(key="a", ts="2025-01-15T00:00:00"), rec(key="c", ts="2025-01-25T00:00:00")],
        progress=progress,
    )
    assert other[1]["watermark"] == "2025-01-20T00:00:00"
    # Read again under the new watermark: "a" is now older than it and skipped.
    assert (summary["input_records"], summary["skipped"], summary["inserted"]) == (2, 1, 1)
    assert summary["watermark_before"] == "2025-01-20T00:00:00"
    assert set(target(conn)) == {"old", "b", "c"}
    assert fetch(conn, "SELECT count(*) FROM lineage WHERE run_id = :r", r=summary["run_id"]) == [(3,)]
    runs = fetch(conn, "SELECT id, applied_seq FROM runs WHERE status = 'succeeded' ORDER BY applied_seq")
    assert [r.id for r in runs] == [1, other[1]["run_id"], summary["run_id"]]


def test_a_dead_letter_resolved_meanwhile_is_not_reprocessed_twice(conn, engine, write, monkeypatch):
    load(conn, write, [rec(key="a", value="abc")])
    (dl_id,) = [r.id for r in fetch(conn, "SELECT id FROM dead_letters")]
    classify, raced = load_module.classify, []

    def classify_after_a_rival(connection):
        if not raced:  # another operator's retry of the same dead letter applies first
            raced.append(True)
            with engine.connect() as other:
                raced.append(reprocess(other, [dl_id], edited=rec(key="a", value=1)))
        return classify(connection)

    monkeypatch.setattr(load_module, "classify", classify_after_a_rival)
    with pytest.raises((RunFailed, DeadLetterError)):
        reprocess(conn, [dl_id], edited=rec(key="a", value=2))
    assert raced[1]["inserted"] == 1
    assert fetch(conn, "SELECT status, attempts, resolved_run_id FROM dead_letters") == [
        ("resolved", 1, raced[1]["run_id"])
    ]
    assert target(conn)["a"][1] == 1.0


def test_recording_a_run_does_not_wait_for_another_runs_apply_on_postgresql(conn, engine, write):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has a single write lock: there an upload waits for the apply (seconds)")
    from app.database import write_transaction
    from app.pipeline import create_run

    recorded = []

    def progress(phase, records_read, nbytes):
        if phase == "applying" and not recorded:  # this run holds the apply lock now
            with engine.connect() as other:
                other.exec_driver_sql("SET lock_timeout = '5s'")
                other.commit()
                recorded.append(create_run(other, kind="api", source_name="during.json"))
                # An operator change does wait for the apply.
                with pytest.raises(Exception, match="lock timeout"), write_transaction(other):
                    pass

    summary = run_file(conn, write("big.json", json.dumps([rec(key=f"k{i}") for i in range(50)])),
                       progress=progress)
    assert summary["inserted"] == 50 and len(recorded) == 1
    assert fetch(conn, "SELECT status FROM runs WHERE id = :i", i=recorded[0]) == [("queued",)]
